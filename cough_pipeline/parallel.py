"""Parallel maps and progress reporting shared by every long loop of the library.

Long loops take an optional ``progress(done, total)`` callback and call it after every item; what to do with it
(log every N items, update a bar) is the caller's choice, made once in :func:`throttled`.

:func:`process_map` is the one process-pool mapper: results in input order, in this process for one worker, else
over spawned (not forked) workers: a Dagster step is multi-threaded and forking it can copy held locks. A script
calling it with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.
:func:`ordered_bounded_map` is the thread-pool counterpart for I/O-bound loops whose items hold decoded audio.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context

#: ``progress(done, total)``: called after each item of a long loop.
ProgressCallback = Callable[[int, int], None]


def throttled(report: Callable[[str], None], verb: str, every: int = 100) -> ProgressCallback:
    """A progress callback that calls ``report("<verb> <done>/<total>")`` every ``every`` items and at the end.

    Args:
        report: where the line goes, e.g. ``context.log.info`` or ``print``.
        verb: what was done to each item (``"scored"``, ``"windowed"``).
        every: report every this many items; the last item is always reported.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")

    def progress(done: int, total: int) -> None:
        if done == total or done % every == 0:
            report(f"{verb} {done}/{total}")

    return progress


def notify(progress: ProgressCallback | None, done: int, total: int) -> None:
    """Call ``progress(done, total)`` when a callback was given."""
    if progress is not None:
        progress(done, total)


@contextmanager
def process_map(workers: int) -> Iterator[Callable]:
    """A ``map(function, items, chunksize=1)`` callable whose results come in input order.

    One worker maps in this process (no pool start-up cost); more map over a spawned process pool that is shut
    down when the context exits. ``function`` and the items must be picklable when ``workers > 1``.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        yield lambda function, items, chunksize=1: map(function, items)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        yield pool.map


def ordered_bounded_map(pool: Executor, function: Callable, items: Iterable, in_flight: int) -> Iterator:
    """``pool.map`` that keeps at most ``in_flight`` items submitted ahead, so decoded audio never piles up."""
    futures = []
    for item in items:
        futures.append(pool.submit(function, item))
        if len(futures) >= in_flight:
            yield futures.pop(0).result()
    for future in futures:
        yield future.result()
