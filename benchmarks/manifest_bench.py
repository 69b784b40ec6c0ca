"""Manifest building: demo-corpus generation, then loading + probing every dataset (files/s, audio s/s)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import stopwatch, write_result
from cough_pipeline.demo_corpus import generate_demo_corpus
from cough_pipeline.manifest import build_manifest
from cough_pipeline.schema import ALL_DATASETS


def run(size: str = "medium") -> Path:
    """Generate the demo corpus, build every dataset's manifest (timed on a second pass), and write the JSON."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with stopwatch() as generation:
            generate_demo_corpus(root, size=size)
        per_dataset = {}
        for dataset in ALL_DATASETS:
            build_manifest(dataset, root / dataset)  # first pass extracts Coswara's tarballs: not timed
            with stopwatch() as elapsed:
                build = build_manifest(dataset, root / dataset)
            seconds = elapsed()
            files = len(build.manifest) + len(build.quarantine)
            audio_seconds = float(build.manifest["duration_s"].sum())
            per_dataset[dataset] = {
                "files": files,
                "seconds": round(seconds, 3),
                "files_per_s": round(files / seconds, 1),
                "audio_seconds_per_s": round(audio_seconds / seconds, 1),
                "formats": sorted(set(build.manifest["audio_format"])),
            }
    total_files = sum(d["files"] for d in per_dataset.values())
    total_seconds = sum(d["seconds"] for d in per_dataset.values())
    return write_result(
        "manifest",
        {
            "corpus_size": size,
            "demo_corpus_generation_s": round(generation(), 2),
            "total_files": total_files,
            "total_files_per_s": round(total_files / total_seconds, 1),
            "per_dataset": per_dataset,
        },
    )
