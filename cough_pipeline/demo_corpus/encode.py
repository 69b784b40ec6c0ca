"""Write float32 signals to the audio containers the real datasets ship.

WAV goes through soundfile. Lossy formats (Ogg Opus, WebM Opus, MP3) are queued
on a :class:`LossyBatch` and written by an ``ffmpeg`` subprocess with bit-exact
flags and no metadata, so the same samples always produce the same bytes.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

BITEXACT_FLAGS = ("-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1")


class FfmpegNotFoundError(RuntimeError):
    """Raised when a lossy demo file is requested but no ``ffmpeg`` executable is on PATH."""


def _as_pcm_ready(samples: np.ndarray) -> np.ndarray:
    """Mono float32 clipped to [-1, 1] so encoders never wrap around."""
    return np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write a mono WAV file (``subtype`` e.g. PCM_16 or PCM_24)."""
    sf.write(path, _as_pcm_ready(samples), sample_rate, subtype=subtype, format="WAV")


def wav_bytes(samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """The bytes :func:`write_wav` would write, for packing into archives."""
    buffer = io.BytesIO()
    sf.write(buffer, _as_pcm_ready(samples), sample_rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def _ffmpeg_executable() -> str:
    """Path of ``ffmpeg``, or a clear error saying it is needed and for what."""
    executable = shutil.which("ffmpeg")
    if executable is None:
        raise FfmpegNotFoundError(
            "ffmpeg was not found on PATH; it is required to write the demo corpus's "
            "Ogg/WebM Opus and MP3 files (install ffmpeg built with libopus and libmp3lame)."
        )
    return executable


@dataclass(frozen=True)
class LossyFormat:
    """An ffmpeg container/codec pair and its default bitrate."""

    container: str
    codec: str
    bitrate_kbps: int


OGG_OPUS = LossyFormat("ogg", "libopus", 24)
"""Opus in Ogg (WhatsApp voice notes, some COUGHVID uploads)."""
WEBM_OPUS = LossyFormat("webm", "libopus", 32)
"""Opus in WebM (browser MediaRecorder uploads, as in COUGHVID)."""
MP3 = LossyFormat("mp3", "libmp3lame", 64)
"""Constant-bitrate MP3 (Virufy's clinical files are 48 kHz mono 64 kb/s)."""


@dataclass(frozen=True)
class _LossyJob:
    path: Path
    samples: np.ndarray
    sample_rate: int
    lossy_format: LossyFormat
    bitrate_kbps: int


class LossyBatch:
    """Collects lossy files and encodes them with as few ffmpeg processes as possible.

    Starting an ffmpeg process costs far more than encoding a few seconds of audio, so a
    dataset's files are queued with :meth:`add` and written by one :meth:`encode`
    call. Each output is encoded independently, so the bytes equal a one-file run.
    Creating a batch already fails with :class:`FfmpegNotFoundError` when ffmpeg is
    missing, before any audio is synthesised.
    """

    MAX_FILES_PER_PROCESS = 64

    def __init__(self) -> None:
        self._executable = _ffmpeg_executable()
        self._jobs: list[_LossyJob] = []

    def add(
        self,
        path: Path,
        samples: np.ndarray,
        sample_rate: int,
        lossy_format: LossyFormat,
        bitrate_kbps: int | None = None,
    ) -> None:
        """Queue ``samples`` (mono float) to be written to ``path`` in ``lossy_format``."""
        bitrate = bitrate_kbps if bitrate_kbps is not None else lossy_format.bitrate_kbps
        self._jobs.append(_LossyJob(Path(path), _as_pcm_ready(samples), sample_rate, lossy_format, bitrate))

    def encode(self) -> None:
        """Write every queued file, then empty the queue."""
        for first in range(0, len(self._jobs), self.MAX_FILES_PER_PROCESS):
            _run_ffmpeg(self._executable, self._jobs[first : first + self.MAX_FILES_PER_PROCESS])
        self._jobs.clear()


def _run_ffmpeg(executable: str, jobs: list[_LossyJob]) -> None:
    """One ffmpeg process reading each job's raw float32 input and writing its output."""
    with tempfile.TemporaryDirectory(prefix="demo-corpus-ffmpeg-") as scratch:
        inputs: list[str] = []
        outputs: list[str] = []
        for index, job in enumerate(jobs):
            raw = Path(scratch) / f"{index}.f32"
            raw.write_bytes(job.samples.astype("<f4").tobytes())
            inputs += ["-f", "f32le", "-ar", str(job.sample_rate), "-ac", "1", "-i", str(raw)]
            outputs += [
                "-map", f"{index}:a", *BITEXACT_FLAGS, "-threads", "1", "-c:a", job.lossy_format.codec,
                "-b:a", f"{job.bitrate_kbps}k", "-f", job.lossy_format.container, str(job.path),
            ]  # fmt: skip
        command = [executable, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *inputs, *outputs]
        result = subprocess.run(command, capture_output=True)
    if result.returncode != 0:
        names = ", ".join(job.path.name for job in jobs)
        raise RuntimeError(f"ffmpeg failed writing {names}: {result.stderr.decode(errors='replace').strip()}")
