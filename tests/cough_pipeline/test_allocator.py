"""Retaining freed memory: page faults of a repeated large allocation inside and outside the block."""

import statistics
import subprocess
import sys

import pytest

from cough_pipeline.allocator import _libc

pytestmark = pytest.mark.skipif(_libc() is None, reason="needs glibc")

# Run in a fresh interpreter: the allocator settings are process-wide.
SCRIPT = """
import resource
import torch
from cough_pipeline.allocator import freed_memory_retained, retain_freed_memory, release_freed_memory

def step():  # like a training step: several large tensors alive at once, then all freed
    held = [torch.empty(mib << 18).fill_(1.0) for mib in (16, 4, 24, 8, 12, 40)]
    return sum(t.numel() for t in held) * 4 // resource.getpagesize()

# the heap grows over the first retained steps (freed blocks do not always fit the next request) before it settles
WARM_STEPS = 4


def faults(repeats=5):  # the minor page faults of each step
    counts = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return counts

pages = step()
default = faults()
with freed_memory_retained() as retained:
    for _ in range(WARM_STEPS):
        step()
    inside = faults()
    with freed_memory_retained():
        pass
    nested_exit = faults()
after = faults()
retain_freed_memory()
for _ in range(WARM_STEPS):
    step()
with freed_memory_retained():
    pass
process_wide = faults()
release_freed_memory()
released = faults()
runs = (default, inside, nested_exit, after, process_wide, released)
print(retained, pages, *(",".join(map(str, counts)) for counts in runs))
"""


def test_freed_memory_is_reused_inside_the_block_and_given_back_after():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    retained, pages, *lists = result.stdout.split()
    pages = int(pages)
    default, inside, nested_exit, after, process_wide, released = (
        [int(c) for c in counts.split(",")] for counts in lists
    )
    assert retained == "True"
    # five steps with glibc's own thresholds fault more than a whole step's pages
    assert sum(default) > pages
    # retained: once the heap has grown, a step faults (almost) nothing, also after a nested block; per step (the
    # median), since on a loaded machine one step now and then still regrows the heap
    assert statistics.median(inside) < pages / 4
    assert statistics.median(nested_exit) < pages / 4
    # glibc's usual thresholds come back when the block ends ...
    assert sum(after) > pages
    # ... except when the process retains freed memory as a whole, until that is released
    assert statistics.median(process_wide) < pages / 4
    assert sum(released) > pages
