"""Decoding and probing: formats, rates, failure reasons, and the content hash."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf

from cough_pipeline.audio import AudioDecodeError, content_hash, decode_audio, load_mono, probe_audio
from cough_pipeline.schema import QuarantineReason
from tests.conftest import write_tone


@pytest.mark.parametrize(
    "rate, subtype", [(8_000, "PCM_16"), (16_000, "PCM_24"), (44_100, "PCM_32"), (48_000, "FLOAT")]
)
def test_wav_rates_and_depths_come_from_the_file(tmp_path, rate, subtype):
    path = write_tone(tmp_path / "tone.wav", seconds=1.25, sample_rate=rate, subtype=subtype)
    probe = probe_audio(path)
    assert (probe.audio_format, probe.sample_rate, probe.channels) == ("wav", rate, 1)
    assert probe.duration_s == pytest.approx(1.25, abs=1 / rate)


def test_stereo_is_reported_and_mixed_down(tmp_path):
    t = np.arange(16_000) / 16_000
    stereo = np.stack([np.sin(2 * np.pi * 300 * t), np.zeros_like(t)], axis=1) * 0.5
    sf.write(tmp_path / "stereo.wav", stereo, 16_000)
    decoded = decode_audio(tmp_path / "stereo.wav")
    assert decoded.channels == 2
    assert np.allclose(decoded.mono(), stereo.mean(axis=1), atol=1e-4)


@pytest.mark.parametrize(
    "suffix, codec_args, expected",
    [
        (".webm", ["-c:a", "libopus"], "webm"),
        (".ogg", ["-c:a", "libopus"], "ogg"),
        (".opus", ["-c:a", "libopus"], "opus"),
        (".mp3", ["-c:a", "libmp3lame", "-b:a", "64k"], "mp3"),
    ],
)
def test_compressed_formats_decode_through_libsndfile_or_ffmpeg(tmp_path, suffix, codec_args, expected):
    source = write_tone(tmp_path / "tone.wav", seconds=1.0, sample_rate=48_000)
    target = tmp_path / f"tone{suffix}"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), *codec_args, str(target)], check=True)
    probe = probe_audio(target)
    assert probe.audio_format == expected and probe.sample_rate == 48_000
    assert probe.duration_s == pytest.approx(1.0, abs=0.08)  # codec priming/padding


def test_resampling_on_load(tmp_path):
    path = write_tone(tmp_path / "tone.wav", seconds=1.0, sample_rate=44_100, frequency=1000.0)
    samples, rate = load_mono(path, 16_000)
    assert rate == 16_000 and len(samples) == 16_000
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) * rate / len(samples) == pytest.approx(1000.0, abs=2.0)


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, QuarantineReason.AUDIO_MISSING),
        (b"", QuarantineReason.AUDIO_EMPTY),
        (b"\x00\x01garbage" * 100, QuarantineReason.AUDIO_UNREADABLE),
    ],
)
def test_failures_carry_their_quarantine_reason(tmp_path, content, reason):
    path = tmp_path / "broken.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioDecodeError) as raised:
        decode_audio(path)
    assert raised.value.reason is reason


def test_non_finite_samples_are_unreadable(tmp_path):
    data = np.zeros(1000, dtype=np.float32)
    data[10] = np.nan
    sf.write(tmp_path / "nan.wav", data, 16_000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="NaN"):
        decode_audio(tmp_path / "nan.wav")


def test_content_hash_ignores_container_and_depth_but_not_content():
    t = np.arange(16_000) / 16_000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    assert content_hash(tone, 16_000) == content_hash(tone.astype(np.float64), 16_000)
    assert content_hash(tone, 16_000) != content_hash(tone * 0.5, 16_000)
