"""Run every benchmark (or those named: ``python -m benchmarks segmentation``) and print where its JSON went."""

from __future__ import annotations

import json
import sys

from benchmarks import (
    classical_stage_bench,
    classifier_bench,
    cough_features_bench,
    cough_filter_bench,
    distillation_bench,
    icbhi_preprocessing_bench,
    icbhi_spectral_bench,
    manifest_bench,
    mixtures_bench,
    paper_memory_bench,
    predict_bench,
    pruning_bench,
    segmentation_bench,
    separation_bench,
)

BENCHMARKS = {
    "manifest": manifest_bench.run,
    "segmentation": segmentation_bench.run,
    "cough_filter": cough_filter_bench.run,
    "mixtures": mixtures_bench.run,
    "separation": separation_bench.run,
    "pruning": pruning_bench.run,
    "icbhi_spectral": icbhi_spectral_bench.run,
    "icbhi_preprocessing": icbhi_preprocessing_bench.run,
    "cough_features": cough_features_bench.run,
    "classical_stage": classical_stage_bench.run,
    "predict": predict_bench.run,
    "distillation": distillation_bench.run,
}
#: Long runs left out of a plain ``make bench`` (name them: ``make bench BENCH=paper_memory``).
ON_REQUEST = {"paper_memory": paper_memory_bench.run, "classifier": classifier_bench.run}

if __name__ == "__main__":
    names = sys.argv[1:] or list(BENCHMARKS)
    known = {**BENCHMARKS, **ON_REQUEST}
    unknown = sorted(set(names) - set(known))
    if unknown:
        sys.exit(f"unknown benchmarks {unknown}; choose from {sorted(known)}")
    for name in names:
        path = known[name]()
        print(f"{path}:\n{json.dumps(json.loads(path.read_text())['figures'], indent=2)}")
