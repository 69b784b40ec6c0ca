"""Run every benchmark (or those named: ``python -m benchmarks segmentation``) and print where its JSON went."""

from __future__ import annotations

import json
import sys

from benchmarks import (cough_filter_bench, manifest_bench, mixtures_bench, pruning_bench, segmentation_bench,
                        separation_bench)

BENCHMARKS = {"manifest": manifest_bench.run, "segmentation": segmentation_bench.run,
              "cough_filter": cough_filter_bench.run, "mixtures": mixtures_bench.run,
              "separation": separation_bench.run, "pruning": pruning_bench.run}

if __name__ == "__main__":
    names = sys.argv[1:] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        sys.exit(f"unknown benchmarks {unknown}; choose from {sorted(BENCHMARKS)}")
    for name in names:
        path = BENCHMARKS[name]()
        print(f"{path}:\n{json.dumps(json.loads(path.read_text())['figures'], indent=2)}")
