"""The champion: best challenger on the report, a validation-only threshold, and promotion only by a margin."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from cough_pipeline.classification.calibration import fit_calibrator
from cough_pipeline.classification.champion import (
    Champion,
    ChampionConfig,
    challenger,
    promote,
    threshold_for_sensitivity,
)
from cough_pipeline.classification.errors import ClassificationError


def _report(scores: dict[tuple[str, str], float]) -> pd.DataFrame:
    rows = [
        {
            "model": m,
            "variant": v,
            "evaluation": e,
            "dataset": "all",
            "metric": "roc_auc",
            "value": s,
            "ci_low": s - 0.1,
            "ci_high": min(s + 0.1, 1.0),
        }
        for (m, v), s in scores.items()
        for e in ("holdout", "cv")
    ]
    return pd.DataFrame(rows)


def _validation(model: str, variant: str) -> pd.DataFrame:
    labels = np.r_[np.ones(10, int), np.zeros(10, int)]
    probabilities = np.r_[np.linspace(0.95, 0.5, 10), np.linspace(0.6, 0.05, 10)]
    return pd.DataFrame({"model": model, "variant": variant, "label": labels, "probability": probabilities})


def test_the_threshold_is_the_highest_that_reaches_the_target_sensitivity():
    labels = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    p = [0.9, 0.8, 0.7, 0.6, 0.2, 0.65, 0.5, 0.3, 0.1, 0.05]
    threshold, sensitivity, specificity = threshold_for_sensitivity(labels, p, 0.8)
    assert threshold == 0.6 and sensitivity == 0.8 and specificity == 0.8  # 4 of 5 positives; 0.65 is a false alarm
    assert threshold_for_sensitivity(labels, p, 1.0)[0] == 0.2
    with pytest.raises(ClassificationError, match="both classes"):
        threshold_for_sensitivity([1, 1], [0.2, 0.3], 0.8)


def test_the_challenger_is_the_best_holdout_model_with_its_threshold_from_validation_rows():
    report = _report({("svm@all", "original"): 0.81, ("knn@top5", "separated"): 0.9})
    validation = pd.concat([_validation("svm@all", "original"), _validation("knn@top5", "separated")])
    stored = {"svm@all": ("classical_models", "r1"), "knn@top5": ("classical_models", "r1")}
    best = challenger(report, validation, stored, ChampionConfig())
    assert (best.model, best.variant, best.asset, best.version, best.score) == (
        "knn@top5",
        "separated",
        "classical_models",
        "r1",
        0.9,
    )
    assert best.validation_sensitivity >= 0.8 and best.threshold == pytest.approx(0.6)
    assert Champion.from_json(best.to_json()) == best


def test_a_champion_is_not_replaced_by_a_worse_or_barely_better_challenger():
    report = _report({("svm@all", "original"): 0.85})
    validation = _validation("svm@all", "original")
    current = challenger(report, validation, {"svm@all": ("classical_models", "r1")}, ChampionConfig())
    worse = dataclasses.replace(current, model="knn@all", version="r2", score=0.80)
    barely = dataclasses.replace(current, model="knn@all", version="r2", score=0.855)
    better = dataclasses.replace(current, model="knn@all", version="r2", score=0.87)
    for candidate in (worse, barely):
        kept, why = promote(current, candidate, margin=0.01)
        assert kept == current and "stays" in why
    promoted, why = promote(current, better, margin=0.01)
    assert promoted == better and "beats" in why
    same, why = promote(current, current, margin=0.01)
    assert same == current and "unchanged" in why
    first, why = promote(None, current, margin=0.01)
    assert first == current and "no champion yet" in why


def test_an_empty_report_is_a_clear_error():
    with pytest.raises(ClassificationError, match="roc_auc"):
        challenger(
            _report({}).reindex(
                columns=["model", "variant", "evaluation", "dataset", "metric", "value", "ci_low", "ci_high"]
            ),
            _validation("a", "b"),
            {},
            ChampionConfig(),
        )


def test_a_calibrated_champion_chooses_its_threshold_on_calibrated_probabilities_and_applies_them():
    report = _report({("mobilenetv2", "separated"): 0.9})
    validation = _validation("mobilenetv2", "separated")
    calibrator = fit_calibrator(validation["label"], validation["probability"], "temperature")
    stored = {"mobilenetv2": ("classifiers/mobilenetv2", "r2")}
    raw = challenger(report, validation, stored, ChampionConfig())
    calibrated = challenger(
        report, validation, stored, ChampionConfig(), {("mobilenetv2", "separated"): calibrator.to_json()}
    )
    assert calibrated.threshold == pytest.approx(float(calibrator.apply([raw.threshold])[0]))
    assert calibrated.validation_sensitivity == raw.validation_sensitivity
    assert calibrated.calibrate(0.7) == pytest.approx(float(calibrator.apply([0.7])[0]))
    assert raw.calibrate(0.7) == 0.7
    restored = Champion.from_json(calibrated.to_json())
    assert restored == calibrated
    older = {k: v for k, v in dataclasses.asdict(raw).items() if k != "calibrator"}
    assert Champion.from_json(json.dumps({**older, "decision": "kept"})).calibrator is None
