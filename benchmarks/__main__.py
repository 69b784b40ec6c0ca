"""Run every benchmark and print where its JSON went."""

from __future__ import annotations

import json

from benchmarks import manifest_bench

BENCHMARKS = [manifest_bench.run]

if __name__ == "__main__":
    for benchmark in BENCHMARKS:
        path = benchmark()
        print(f"{path}:\n{json.dumps(json.loads(path.read_text())['figures'], indent=2)}")
