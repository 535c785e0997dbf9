"""Benchmark suite of the fraud-scoring service against the usual scikit-learn approach.

Run it as ``python -m benchmarks --smoke`` (CI) or ``python -m benchmarks --full``; see
docs/benchmarks.md for what each figure means.
"""
