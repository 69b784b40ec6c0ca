"""``python -m tests.services.launch_runs ccs coughvid``: one ``dataset_job`` run per partition, side by side, on the
instance of ``$DAGSTER_HOME`` with the executor ``COUGH_PIPELINE_EXECUTOR`` names: what ``dagster job execute -m
assets.definitions -j dataset_job`` does for one partition, with the code location imported once and each run in a
process forked from this one (Dagster's run execution is not thread-safe: two runs in threads deadlock in its
logging setup). Prints one line ``<partition> <run id> <success>`` per run; exits 1 when one failed."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

from dagster import DagsterInstance, execute_job
from dagster._core.definitions.reconstruct import ReconstructableRepository

REPO = Path(__file__).resolve().parents[2]
JOB = ReconstructableRepository.for_module(
    "assets.definitions", "defs", working_directory=str(REPO)
).get_reconstructable_job("dataset_job")


def run(partition: str) -> tuple[str, str, bool]:
    with DagsterInstance.get() as instance:
        result = execute_job(JOB, instance=instance, tags={"dagster/partition": partition})
        return partition, result.run_id, result.success


def main(partitions: list[str]) -> int:
    JOB.get_definition()  # imports the code location before the fork
    pool = multiprocessing.get_context("fork").Pool(len(partitions))
    results = pool.map(run, partitions)
    pool.close()  # let the run processes exit on their own (terminating them reads as an interrupt in Dagster)
    pool.join()
    for partition, run_id, success in results:
        print(partition, run_id, success, flush=True)
    return 0 if all(success for _, _, success in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
