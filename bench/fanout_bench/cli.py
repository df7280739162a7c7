"""``fanout bench <name>``: each benchmark parses its own options and is imported only when asked for."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "engine": ("fanout_bench.engine", "the data plane's throughput on this machine"),
    "load": ("fanout_bench.load", "ramp real WebRTC viewers against fanout and/or Janus"),
    "first-frame": ("fanout_bench.first_frame", "time to first frame in Chromium with janus.js"),
    "cluster": ("fanout_bench.cluster", "joins through an edge, the origin's CPU per relay; --failover; --scale over 1-3 edges"),
    "adaptive": ("fanout_bench.adaptive", "janus.js in Chromium on a tc-shaped link: layer, freezes (fanout vs Janus)"),
    "soak": ("fanout_bench.soak", "hours of churning viewers and restarting sources: RSS, fds, leaks, loss"),
    "whip": ("fanout_bench.whip", "WHIP ingest vs plain RTP of the same stream: CPU per Gbit/s, latency to viewers"),
    "control": ("fanout_bench.control", "the control plane's STUN/RTCP/DTLS budget, consent bursts at load"),
    "stall": ("fanout_bench.stall", "a control-plane stall on the worker's core, engine threads ahead of it vs level"),
}


def main(argv: list[str]) -> int:
    if argv and argv[0] in BENCHMARKS:
        module, _ = BENCHMARKS[argv[0]]
        result: int = importlib.import_module(module).main(argv[1:])
        return result
    parser().parse_args(argv)  # --help, or a usage error naming the benchmarks
    return 2


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fanout bench", description="Measure fanout.")
    benchmarks = parser.add_subparsers(dest="benchmark", required=True)
    for name, (_, summary) in BENCHMARKS.items():
        benchmarks.add_parser(name, help=f"{summary} (see its --help)")
    return parser
