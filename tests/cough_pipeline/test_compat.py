"""cough_pipeline.compat: scaper 1.6.5 works under NumPy 2 once imported through import_scaper()."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from cough_pipeline.compat import import_scaper, restore_numpy_aliases


def test_import_scaper_restores_the_inf_alias():
    scaper = import_scaper()
    assert scaper.__version__ == "1.6.5"
    assert np.Inf == np.inf


def test_restoring_twice_keeps_the_same_alias():
    restore_numpy_aliases()
    restore_numpy_aliases()
    assert np.Inf is np.inf


def test_a_trivial_soundscape_renders_under_numpy_2(tmp_path):
    """A foreground event takes the code path that reads ``-np.Inf``; it fails on NumPy 2 without the fix."""
    scaper = import_scaper()
    rate = 44_100
    t = np.arange(rate) / rate
    (tmp_path / "fg" / "tone").mkdir(parents=True)
    (tmp_path / "bg" / "hiss").mkdir(parents=True)
    sf.write(tmp_path / "fg" / "tone" / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * t[: rate // 2]), rate)
    sf.write(tmp_path / "bg" / "hiss" / "hiss.wav", 0.05 * np.random.default_rng(0).standard_normal(rate), rate)
    soundscape = scaper.Scaper(1.0, str(tmp_path / "fg"), str(tmp_path / "bg"), random_state=0)
    soundscape.ref_db = -30
    soundscape.add_background(("const", "hiss"), ("choose", []), ("const", 0))
    soundscape.add_event(
        ("const", "tone"),
        ("choose", []),
        ("const", 0),
        ("uniform", 0, 0.4),
        ("const", 0.5),
        ("uniform", -3, 3),
        ("uniform", -1, 1),
        ("uniform", 0.9, 1.1),
    )
    audio, _, annotations, events = soundscape.generate(disable_instantiation_warnings=True)
    assert audio.shape == (rate, 1)
    assert len(annotations) == 1 and len(events) == 2
