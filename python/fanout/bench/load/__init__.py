"""``fanout bench load``: real WebRTC viewers by the thousand against any Janus-API server.

See :mod:`fanout.bench.load.command` for the run, :mod:`~fanout.bench.load.viewer`
for one viewer, :mod:`~fanout.bench.load.ramp` for the measurement.
"""

from fanout.bench.load.command import main

__all__ = ["main"]
