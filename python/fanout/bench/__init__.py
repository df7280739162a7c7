"""Benchmarks run as commands (``fanout bench ...``), never part of the test suite."""
