"""The ``fanout`` command: ``fanout serve`` runs the server, ``fanout bench <name>`` measures it."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path

# fanout bench <name>: each benchmark parses its own options and is imported only when asked for.
BENCHMARKS = {
    "engine": ("fanout.bench.engine", "the data plane's throughput on this machine"),
    "load": ("fanout.bench.load", "ramp real WebRTC viewers against fanout and/or Janus"),
    "first-frame": ("fanout.bench.first_frame", "time to first frame in Chromium with janus.js"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) >= 2 and argv[0] == "bench" and argv[1] in BENCHMARKS:
        module, _ = BENCHMARKS[argv[1]]
        sys.exit(importlib.import_module(module).main(argv[2:]))
    args = _parser().parse_args(argv)

    from fanout.admin.logs import LOGS, PYTHON_NAMES

    LOGS.configure(PYTHON_NAMES[args.log_level or "info"])
    LOGS.explicit = args.log_level is not None
    from fanout.server import serve

    try:
        asyncio.run(serve(args.config))
    except KeyboardInterrupt:
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fanout", description="A one-to-many WebRTC streaming server that speaks the Janus API.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser("serve", help="run the server")
    serve_command.add_argument(
        "--config",
        type=Path,
        metavar="DIR",
        help="a Janus-style configuration folder (janus.jcfg, janus.transport.*.jcfg, "
        "janus.plugin.streaming.jcfg); without it, fanout's embedded default",
    )
    serve_command.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="overrides general.debug_level of janus.jcfg (the Admin API's set_log_level changes it at run time)",
    )
    bench = commands.add_parser("bench", help="measure fanout")
    benches = bench.add_subparsers(dest="bench", required=True)
    for name, (_, summary) in BENCHMARKS.items():
        benches.add_parser(name, help=f"{summary} (see its --help)")
    return parser
