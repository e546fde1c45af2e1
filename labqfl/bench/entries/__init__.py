"""Benchmark entries; every module here is imported by :func:`labqfl.bench.registry`."""
