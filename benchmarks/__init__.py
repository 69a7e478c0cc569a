"""The benchmarks: each prints a table and writes JSON (run from the repository root: python -m benchmarks.NAME)."""
