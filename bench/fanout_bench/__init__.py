"""fanout's benchmarks, run as commands (``fanout bench ...``, see :mod:`fanout_bench.cli`).

A distribution of their own (bench/pyproject.toml), never part of a production
install of fanout; the tests of their code are in tests/bench/.
"""
