"""Benchmarks against the local control plane (not tests: they measure, they do not assert)."""
