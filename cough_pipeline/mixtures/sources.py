"""Source audio in the form scaper wants: 44.1 kHz mono wav files in ``<root>/<label>/`` folders.

scaper reads every source with libsndfile and resamples it through sox on *every* mixture. Converting each cough
and noise file once (decode any container, mix to mono, resample with soxr) into a cache, and pointing scaper at
symlinks, keeps that per-mixture work to a plain wav read:

* a file that already is a 44.1 kHz mono wav is used in place (symlinked, never copied);
* anything else (Virufy mp3, 16 kHz CCS wav, 48 kHz Opus...) is decoded once into
  ``<cache>/<stem>-<key>.wav`` (32-bit float, so no requantisation), where ``key`` hashes the source's absolute
  path, size, modification time, the target rate and the trimming flag: a changed source gets a new cache file,
  an unchanged one is never converted twice, and concurrent runs write the same bytes through an atomic rename;
* with ``trim_silence`` (used for coughs), leading and trailing digital silence (below -80 dBFS, see
  :func:`cough_pipeline.audio.trim_digital_silence`) is cut, so a manually segmented cough padded with zeros
  (Virufy's segments are padded to 1.6 s) is placed by its real extent, and sox does not pitch-shift and
  time-stretch silence on every mixture. A native wav with silent edges is therefore converted too.

scaper takes a source's label from its parent folder, so :func:`stage_for_scaper` builds
``<root>/<label>/<NNNNNN>_<stem>.wav`` symlinks to the prepared files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from cough_pipeline.audio import AudioDecodeError, load_mono, trim_digital_silence
from cough_pipeline.schema import QuarantineReason


@dataclass(frozen=True)
class PreparedSource:
    """A source file ready for scaper: ``prepared`` is a mono wav at the mixture rate (maybe ``original`` itself)."""

    original: str
    prepared: str
    duration_s: float
    converted: bool


def _is_ready(path: Path, sample_rate: int) -> bool:
    """Whether ``path`` is already a mono wav at ``sample_rate`` (then scaper can read it as it is)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        return False
    return info.format in ("WAV", "WAVEX") and info.samplerate == sample_rate and info.channels == 1


def _has_silent_edges(path: Path) -> bool:
    """Whether ``path`` starts or ends with digital silence that :func:`trim_digital_silence` would cut."""
    samples, _ = sf.read(str(path), dtype="float32")
    return len(trim_digital_silence(samples)) != len(samples)


def cache_path(path: Path, cache_dir: Path, sample_rate: int, trim_silence: bool) -> Path:
    """Where the converted copy of ``path`` lives: keyed by absolute path, size, mtime, rate and trimming."""
    status = path.stat()
    identity = f"{path.resolve()}|{status.st_size}|{status.st_mtime_ns}|{sample_rate}|trim={trim_silence}"
    return cache_dir / f"{path.stem}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.wav"


def _convert(path: Path, target: Path, sample_rate: int, trim_silence: bool) -> None:
    """Decode ``path`` to mono at ``sample_rate`` (edges trimmed if asked) and write ``target`` atomically."""
    samples, _ = load_mono(path, sample_rate)
    if trim_silence:
        samples = trim_digital_silence(samples)
        if len(samples) == 0:
            raise AudioDecodeError(QuarantineReason.AUDIO_NO_SAMPLES, "only digital silence (below -80 dBFS)")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".wav", dir=target.parent)
    os.close(handle)
    try:
        sf.write(temporary, samples, sample_rate, subtype="FLOAT")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def prepare_source(path: str | Path, cache_dir: Path, sample_rate: int, trim_silence: bool = False) -> PreparedSource:
    """``path`` as a mono wav at ``sample_rate``: itself when it already is one, else its (cached) conversion.

    Raises :class:`~cough_pipeline.audio.AudioDecodeError` when the file cannot be decoded (or, with
    ``trim_silence``, holds nothing but digital silence: ``audio_no_samples``).
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise AudioDecodeError(QuarantineReason.AUDIO_MISSING, f"no file at {path}")
    if _is_ready(path, sample_rate) and not (trim_silence and _has_silent_edges(path)):
        return PreparedSource(str(path), str(path), float(sf.info(str(path)).duration), converted=False)
    target = cache_path(path, Path(cache_dir), sample_rate, trim_silence)
    if not target.is_file():
        _convert(path, target, sample_rate, trim_silence)
    return PreparedSource(str(path), str(target), float(sf.info(str(target)).duration), converted=True)


def stage_for_scaper(root: Path, label: str, prepared: list[str]) -> list[str]:
    """Symlink each prepared file as ``<root>/<label>/<NNNNNN>_<stem>.wav``; returns the link paths, in order.

    The number keeps two files with the same name apart; the links are what scaper (and the JAMS) refer to.
    """
    folder = root / label
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for number, target in enumerate(prepared):
        link = folder / f"{number:06d}_{Path(target).stem}.wav"
        link.symlink_to(Path(target).resolve())
        links.append(str(link))
    return links
