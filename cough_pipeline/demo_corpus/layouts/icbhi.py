"""ICBHI 2017 official layout: ``ICBHI_final_database/<stem>.wav|.txt`` plus three tab-separated lists.

Stems are ``<pid>_<recIdx>_<chest>_<mode>_<device>`` with pids from 101. Devices
cycle per recording so that about 3 in 10 are AKGC417L or Meditron (44.1 kHz, 10-10.5 s,
PCM_16) and the rest Litt3200 (4 kHz, 15-20 s, every other one PCM_24); the
44.1 kHz files dominate the corpus size, hence the skew. Recordings cycle through four
profiles (normal, crackles, wheezes, both) that set how likely each breathing
cycle is to hold that adventitious sound; the ``.txt`` flags are exactly what
was synthesised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cough_pipeline.demo_corpus import synth
from cough_pipeline.demo_corpus.encode import write_wav
from cough_pipeline.demo_corpus.layouts.common import pick
from cough_pipeline.demo_corpus.sizes import CorpusSize

FIRST_PATIENT_ID = 101
DEVICE_CYCLE = ("AKGC417L", "Litt3200", "Litt3200", "Meditron", "Litt3200", "Litt3200", "Litt3200")
DEVICE_RATES = {"AKGC417L": 44_100, "Meditron": 44_100, "Litt3200": 4_000}
CHEST_LOCATIONS = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")
PROFILES = {  # name: (crackle probability, wheeze probability, diagnoses)
    "normal": (0.0, 0.0, ("Healthy", "URTI")),
    "crackles": (0.8, 0.0, ("Pneumonia", "LRTI", "Bronchiectasis")),
    "wheezes": (0.0, 0.8, ("Asthma", "Bronchiolitis")),
    "both": (0.7, 0.7, ("COPD",)),
}
PATIENTS_PER_RECORDING = 0.6
TRAIN_SHARE = 0.6
CHILD_PATIENT = 1


def _recording_patients(n_recordings: int) -> list[int]:
    """Patient index of each recording: about 0.6 patients per recording, some with two."""
    n_patients = max(1, round(n_recordings * PATIENTS_PER_RECORDING))
    return [index * n_patients // n_recordings for index in range(n_recordings)]


def _demographic_line(rng: np.random.Generator, pid: int, patient: int, n_patients: int) -> str:
    """``pid age sex adultBMI childKg childCm``: one child, one all-NA patient (the last), adults."""
    if patient == n_patients - 1 and n_patients > 2:
        fields = ["NA"] * 5
    elif patient == CHILD_PATIENT:
        age, sex = f"{rng.uniform(0.5, 12):.2f}", pick(rng, ("M", "F"))
        fields = [age, sex, "NA", f"{rng.uniform(8, 40):.1f}", str(int(rng.integers(70, 150)))]
    else:
        fields = [str(int(rng.integers(30, 86))), pick(rng, ("M", "F")), f"{rng.uniform(18, 35):.2f}", "NA", "NA"]
    return "\t".join([str(pid), *fields])


def _stem(rng: np.random.Generator, pid: int, nth: int, chest: str, device: str) -> str:
    """``<pid>_<recIdx>_<chest>_<mode>_<device>`` with recIdx like ``2b3`` (nth recording of the patient)."""
    recording_index = f"{nth + 1}{pick(rng, ('b', 'p'))}{int(rng.integers(1, 5))}"
    return f"{pid}_{recording_index}_{chest}_{pick(rng, ('sc', 'mc'))}_{device}"


def _write_recording(
    folder: Path, rng: np.random.Generator, stem: str, device: str, profile: str, subtype: str
) -> None:
    """Synthesise one auscultation and write ``<stem>.wav`` plus its cycle annotation ``<stem>.txt``."""
    sample_rate = DEVICE_RATES[device]
    duration_s = rng.uniform(10.0, 10.5) if sample_rate > 8_000 else rng.uniform(15.0, 20.0)
    crackle_p, wheeze_p, _ = PROFILES[profile]
    samples, cycles = synth.lung_sound_recording(rng, sample_rate, duration_s, crackle_p, wheeze_p)
    write_wav(folder / f"{stem}.wav", samples, sample_rate, subtype=subtype)
    lines = [f"{c.onset_s:.3f}\t{c.offset_s:.3f}\t{c.crackles}\t{c.wheezes}\n" for c in cycles]
    (folder / f"{stem}.txt").write_text("".join(lines), encoding="ascii")


def _write_lines(path: Path, lines: list[str]) -> None:
    """Write ASCII text, one ``\\n``-terminated line per entry."""
    path.write_text("".join(f"{line}\n" for line in lines), encoding="ascii")


def write_icbhi(root: Path, rng: np.random.Generator, size: CorpusSize) -> None:
    """Write recordings, annotations, the train/test list, diagnoses and demographics."""
    folder = root / "ICBHI_final_database"
    folder.mkdir(parents=True)
    patients = _recording_patients(size.icbhi_recordings)
    n_patients = patients[-1] + 1
    chest_orders = [rng.permutation(CHEST_LOCATIONS) for _ in range(n_patients)]
    profile_names = list(PROFILES)
    stems, diagnoses = [], {}
    for index, patient in enumerate(patients):
        pid, nth = FIRST_PATIENT_ID + patient, patients[:index].count(patient)
        device, profile = DEVICE_CYCLE[index % len(DEVICE_CYCLE)], profile_names[index % len(profile_names)]
        stem = _stem(rng, pid, nth, str(chest_orders[patient][nth]), device)
        subtype = "PCM_24" if device == "Litt3200" and index % 2 == 0 else "PCM_16"
        _write_recording(folder, rng, stem, device, profile, subtype)
        diagnoses.setdefault(pid, pick(rng, PROFILES[profile][2]))
        stems.append(stem)
    n_train = round(len(stems) * TRAIN_SHARE)
    split_of = {stem: "train" if rank < n_train else "test" for rank, stem in zip(rng.permutation(len(stems)), stems)}
    _write_lines(root / "ICBHI_challenge_train_test.txt", [f"{stem}\t{split_of[stem]}" for stem in stems])
    _write_lines(root / "ICBHI_Challenge_diagnosis.txt", [f"{pid}\t{name}" for pid, name in diagnoses.items()])
    demographics = [_demographic_line(rng, FIRST_PATIENT_ID + p, p, n_patients) for p in range(n_patients)]
    _write_lines(root / "ICBHI_Challenge_demographic_information.txt", demographics)
