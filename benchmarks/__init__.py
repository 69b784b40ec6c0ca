"""``make bench``: speed figures written as JSON under ``benchmarks/results/`` (never asserted in tests)."""
