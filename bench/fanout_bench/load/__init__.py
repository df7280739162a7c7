"""``fanout bench load``: real WebRTC viewers by the thousand against any Janus-API server.

See :mod:`fanout_bench.load.command` for the run, :mod:`~fanout_bench.load.viewer`
for one viewer, :mod:`~fanout_bench.load.ramp` for the measurement.
"""

from fanout_bench.load.command import main

__all__ = ["main"]
