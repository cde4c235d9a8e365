"""Benchmark scripts; each writes its table into docs/benchmarks.md."""
