"""Retaining freed memory: page faults of a repeated large allocation inside and outside the block."""

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

def faults(repeats=5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeats):
        step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

pages = step()
default = faults()
with freed_memory_retained() as retained:
    step(), step()
    inside = faults()
    with freed_memory_retained():
        pass
    nested_exit = faults()
after = faults()
retain_freed_memory()
step(), step()
with freed_memory_retained():
    pass
process_wide = faults()
release_freed_memory()
released = faults()
print(retained, pages, default, inside, nested_exit, after, process_wide, released)
"""


def test_freed_memory_is_reused_inside_the_block_and_given_back_after():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    retained, *counts = result.stdout.split()
    pages, default, inside, nested_exit, after, process_wide, released = map(int, counts)
    assert retained == "True"
    # five steps with glibc's own thresholds fault more than a whole step's pages
    assert default > pages
    # retained: once the heap has grown, five steps fault less than half a step's pages, also after a nested block
    assert inside < pages / 2
    assert nested_exit < pages / 2
    # glibc's usual thresholds come back when the block ends ...
    assert after > pages
    # ... except when the process retains freed memory as a whole, until that is released
    assert process_wide < pages / 2
    assert released > pages
