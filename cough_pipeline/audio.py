"""Decoding and probing audio files of every format the datasets ship (wav, mp3, ogg/opus, webm).

``soundfile`` (libsndfile) reads wav/flac/ogg/mp3 in-process; anything it cannot read (WebM, exotic codecs)
goes through ``ffmpeg``. Sample rate, channels and duration always come from the decoded stream, never from
dataset metadata, and a failure is reported as an :class:`AudioDecodeError` carrying a quarantine reason.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from cough_pipeline.schema import QuarantineReason

#: Rate at which ``content_hash`` is computed, so the same sound at two sample rates hashes alike.
HASH_SAMPLE_RATE = 16_000

_SOUNDFILE_FORMATS = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "FLAC": "flac", "MP3": "mp3", "OGG": "ogg"}
_FFPROBE_FORMATS = {"matroska,webm": "webm", "webm": "webm", "ogg": "ogg", "mp3": "mp3", "wav": "wav", "flac": "flac"}


class AudioDecodeError(Exception):
    """A file that cannot be turned into samples; ``reason`` is the quarantine code."""

    def __init__(self, reason: QuarantineReason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class FfmpegMissingError(RuntimeError):
    """ffmpeg/ffprobe are needed for WebM/Opus and are not on PATH."""


@dataclass(frozen=True)
class DecodedAudio:
    """Samples as float32 ``(frames, channels)`` at the file's own rate, plus the container format."""

    samples: np.ndarray
    sample_rate: int
    audio_format: str

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate

    def mono(self) -> np.ndarray:
        """Channel mean, shape ``(frames,)``."""
        return self.samples.mean(axis=1) if self.channels > 1 else self.samples[:, 0]


@dataclass(frozen=True)
class AudioProbe:
    """What the manifest records about a decodable file."""

    audio_format: str
    sample_rate: int
    channels: int
    duration_s: float
    content_hash: str


def require_ffmpeg() -> str:
    """Path of ffmpeg, or a clear error naming the package to install."""
    path = shutil.which("ffmpeg")
    if path is None or shutil.which("ffprobe") is None:
        raise FfmpegMissingError(
            "ffmpeg/ffprobe not found on PATH; they decode WebM/Ogg/MP3 audio. "
            "Install them with `sudo apt-get install ffmpeg` (Debian/Ubuntu) or `brew install ffmpeg` (macOS)."
        )
    return path


#: WAV format tags whose block (``block_align`` bytes) is exactly one frame: PCM, IEEE float, A-law, mu-law.
_ONE_FRAME_PER_BLOCK_TAGS = frozenset({0x0001, 0x0003, 0x0006, 0x0007})
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
#: A RIFF ``data`` size a streaming writer leaves when it cannot seek back: the length is unknown.
_UNKNOWN_RIFF_SIZES = frozenset({0, 0xFFFFFFFF})
#: Chunk headers read before giving up on finding ``fmt `` and ``data``.
_MAX_RIFF_CHUNKS = 64


@dataclass
class _WavHeader:
    """What the chunk headers of a WAV file say, filled in as the chunks are read."""

    endian: str
    tag: int | None = None
    block_align: int | None = None
    fact_frames: int | None = None
    ds64_data_size: int | None = None
    data_size: int | None = None
    data_end: int | None = None

    def declared_frames(self, file_size: int) -> int | None:
        """PCM, float and G.711 data hold ``data_size // block_align`` frames; other codecs (ADPCM, GSM) are
        counted by their ``fact`` chunk, trusted only when the ``data`` chunk also runs past the end of the file."""
        if self.data_size is None or self.data_size in _UNKNOWN_RIFF_SIZES or not self.block_align:
            return None
        if self.tag in _ONE_FRAME_PER_BLOCK_TAGS:
            return self.data_size // self.block_align
        return self.fact_frames if self.fact_frames and self.data_end > file_size else None


def _wav_declared_frames(path: Path) -> int | None:
    """Frames a RIFF/RIFX/RF64 WAV header promises, reading only chunk headers.

    ``None`` when the file is not a WAV, its length is unknown (a streaming header), or the header does not say.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
                return None
            header = _read_wav_chunks(handle, _WavHeader(">" if head[:4] == b"RIFX" else "<"))
            file_size = path.stat().st_size
    except (OSError, struct.error):
        return None
    return header.declared_frames(file_size)


def _read_wav_chunks(handle, header: _WavHeader) -> _WavHeader:
    """Walk the chunks after the 12-byte RIFF header until ``data`` follows ``fmt `` (or the chunks run out)."""
    position = 12
    for _ in range(_MAX_RIFF_CHUNKS):
        handle.seek(position)
        chunk = handle.read(8)
        if len(chunk) < 8:
            break
        chunk_id, (size,) = chunk[:4], struct.unpack(header.endian + "I", chunk[4:])
        if chunk_id == b"data":
            if size == 0xFFFFFFFF and header.ds64_data_size is not None:
                size = header.ds64_data_size
            header.data_size, header.data_end = size, position + 8 + size
            if header.tag is not None:
                break
        else:
            _read_wav_chunk_body(handle, chunk_id, size, header)
        position += 8 + size + (size & 1)
    return header


def _read_wav_chunk_body(handle, chunk_id: bytes, size: int, header: _WavHeader) -> None:
    """Record what a ``ds64``, ``fmt `` or ``fact`` chunk (the handle is at its body) says; skip any other."""
    endian = header.endian
    if chunk_id == b"ds64" and size >= 16:
        header.ds64_data_size = struct.unpack("<Q", handle.read(16)[8:16])[0]
    elif chunk_id == b"fmt " and size >= 16:
        body = handle.read(min(size, 40))
        (header.tag,) = struct.unpack(endian + "H", body[0:2])
        (header.block_align,) = struct.unpack(endian + "H", body[12:14])
        if header.tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
            (header.tag,) = struct.unpack(endian + "H", body[24:26])  # the sub-format GUID starts with the tag
    elif chunk_id == b"fact" and size >= 4:
        header.fact_frames = struct.unpack(endian + "I", handle.read(4))[0]


def _flac_declared_frames(path: Path) -> int | None:
    """Total samples per channel from a native FLAC file's STREAMINFO; ``None`` when absent or 0 (unknown)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4 + 4 + 18)
    except OSError:
        return None
    if len(head) < 26 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:
        return None
    # STREAMINFO bytes 10-17: sample rate (20 bits), channels (3), bits per sample (5), total samples (36).
    total = int.from_bytes(head[8 + 10 : 8 + 18], "big") & ((1 << 36) - 1)
    return total or None


def declared_frames(path: Path) -> int | None:
    """Frames the container's header says the file holds, where that is cheap to read (WAV family, FLAC)."""
    declared = _wav_declared_frames(path)
    return declared if declared is not None else _flac_declared_frames(path)


def _format_from_suffix(path: Path, container: str) -> str:
    # Ogg Opus files named ``.opus`` are the same container as ``.ogg``; keep the name the source uses.
    return "opus" if container == "ogg" and path.suffix.lower() == ".opus" else container


def _decode_with_soundfile(path: Path) -> DecodedAudio:
    info = sf.info(str(path))
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    container = _SOUNDFILE_FORMATS.get(info.format, info.format.lower())
    return DecodedAudio(samples, int(rate), _format_from_suffix(path, container))


def _ffprobe_stream(path: Path) -> tuple[str, int, int]:
    require_ffmpeg()
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=sample_rate,channels:format=format_name",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise AudioDecodeError(QuarantineReason.AUDIO_UNREADABLE, f"ffprobe: {result.stderr.strip()[:300]}")
    info = json.loads(result.stdout or "{}")
    streams = info.get("streams") or []
    if not streams:
        raise AudioDecodeError(QuarantineReason.AUDIO_UNREADABLE, "no audio stream found")
    format_name = info.get("format", {}).get("format_name", "unknown")
    return _FFPROBE_FORMATS.get(format_name, format_name), int(streams[0]["sample_rate"]), int(streams[0]["channels"])


def _decode_with_ffmpeg(path: Path) -> DecodedAudio:
    container, rate, channels = _ffprobe_stream(path)
    result = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-f",
            "f32le",
            "-acodec",
            "pcm_f32le",
            "-ac",
            str(channels),
            "-ar",
            str(rate),
            "-",
        ],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise AudioDecodeError(
            QuarantineReason.AUDIO_UNREADABLE, f"ffmpeg: {result.stderr.decode(errors='replace').strip()[:300]}"
        )
    samples = np.frombuffer(result.stdout, dtype="<f4").reshape(-1, channels).copy()
    return DecodedAudio(samples, rate, _format_from_suffix(path, container))


def decode_audio(path: str | Path) -> DecodedAudio:
    """Decode a whole file at its native rate.

    Raises :class:`AudioDecodeError` with ``audio_missing``, ``audio_empty``, ``audio_truncated``,
    ``audio_no_samples`` or ``audio_unreadable``. A WAV or FLAC file that decodes to fewer frames than its header
    declares is ``audio_truncated`` (a cut-off download); a header of unknown length (streaming) is not checked.
    """
    path = Path(path)
    _check_is_audio_file(path)
    try:
        decoded = _decode_with_soundfile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as soundfile_error:
        try:
            decoded = _decode_with_ffmpeg(path)
        except AudioDecodeError as ffmpeg_error:
            # Decoder messages repeat the absolute path; the manifest keeps paths relative, so drop it.
            detail = f"libsndfile: {soundfile_error}; {ffmpeg_error.detail}".replace(str(path), path.name)
            raise AudioDecodeError(QuarantineReason.AUDIO_UNREADABLE, detail) from None
    _check_decoded(path, decoded)
    return decoded


def _check_is_audio_file(path: Path) -> None:
    """Raise :class:`AudioDecodeError` unless ``path`` is a non-empty regular file."""
    if path.is_dir():
        raise AudioDecodeError(QuarantineReason.AUDIO_UNREADABLE, f"{path.name} is a directory, not an audio file")
    if not path.exists():
        raise AudioDecodeError(QuarantineReason.AUDIO_MISSING, f"no file at {path.name}")
    if not path.is_file():
        raise AudioDecodeError(QuarantineReason.AUDIO_UNREADABLE, f"{path.name} is not a regular file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(QuarantineReason.AUDIO_EMPTY, "file is 0 bytes")


def _check_decoded(path: Path, decoded: DecodedAudio) -> None:
    """Raise :class:`AudioDecodeError` for samples cut short of the header's length, none at all, or non-finite."""
    declared, held, rate = declared_frames(path), decoded.samples.shape[0], decoded.sample_rate
    if declared is not None and held < declared:
        raise AudioDecodeError(
            QuarantineReason.AUDIO_TRUNCATED,
            f"header declares {declared} frames ({declared / rate:.3f} s), file holds {held} ({held / rate:.3f} s)",
        )
    if decoded.samples.shape[0] == 0:
        raise AudioDecodeError(
            QuarantineReason.AUDIO_NO_SAMPLES, f"{path.stat().st_size}-byte file decodes to 0 samples"
        )
    if not np.isfinite(decoded.samples).all():
        raise AudioDecodeError(QuarantineReason.AUDIO_UNREADABLE, "decoded samples contain NaN or infinity")


def load_mono(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples, resampled to ``sample_rate`` when given; returns ``(samples, rate)``."""
    decoded = decode_audio(path)
    mono = decoded.mono()
    if sample_rate is None or sample_rate == decoded.sample_rate:
        return mono, decoded.sample_rate
    return resample(mono, decoded.sample_rate, sample_rate), sample_rate


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality); deterministic."""
    if source_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def content_hash(mono: np.ndarray, sample_rate: int) -> str:
    """SHA-256 of the signal as 16-bit PCM at :data:`HASH_SAMPLE_RATE`: equal for the same sound re-encoded as wav."""
    pcm = np.clip(np.round(resample(mono, sample_rate, HASH_SAMPLE_RATE) * 32767.0), -32768, 32767).astype("<i2")
    return hashlib.sha256(pcm.tobytes()).hexdigest()


def probe_audio(path: str | Path) -> AudioProbe:
    """Decode a file and summarise it for the manifest; raises :class:`AudioDecodeError`."""
    decoded = decode_audio(path)
    return AudioProbe(
        audio_format=decoded.audio_format,
        sample_rate=decoded.sample_rate,
        channels=decoded.channels,
        duration_s=round(decoded.duration_s, 6),
        content_hash=content_hash(decoded.mono(), decoded.sample_rate),
    )


#: Below this absolute amplitude (-80 dBFS) a sample counts as digital silence (zero padding after lossy coding).
DIGITAL_SILENCE = 1e-4


def trim_digital_silence(samples: np.ndarray, floor: float = DIGITAL_SILENCE) -> np.ndarray:
    """``samples`` (``(frames,)`` or ``(frames, channels)``) without leading/trailing frames quieter than ``floor``;
    an all-silent input gives an empty array."""
    loud = np.abs(samples).reshape(len(samples), -1).max(axis=1) > floor
    indices = np.flatnonzero(loud)
    return samples[indices[0] : indices[-1] + 1] if indices.size else samples[:0]
