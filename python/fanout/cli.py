"""The ``fanout`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fanout", description="A one-to-many WebRTC streaming server that speaks the Janus API.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument(
        "--config",
        type=Path,
        metavar="DIR",
        help="a Janus-style configuration folder (janus.jcfg, janus.transport.*.jcfg, "
        "janus.plugin.streaming.jcfg); without it, fanout's embedded default",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="overrides general.debug_level of janus.jcfg (the Admin API's set_log_level changes it at run time)",
    )
    bench = commands.add_parser("bench", help="measure fanout")
    benches = bench.add_subparsers(dest="bench", required=True)
    benches.add_parser("load", help="ramp real WebRTC viewers against fanout and/or Janus (see its --help)")
    benches.add_parser("engine", help="the data plane's throughput on this machine (see its --help)")
    benches.add_parser("first-frame", help="time to first frame in Chromium with janus.js (see its --help)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["bench", "load"]:  # its own parser, imported only when asked for
        from fanout.bench.load import main as load_main

        sys.exit(load_main(argv[2:]))
    if argv[:2] == ["bench", "first-frame"]:
        from fanout.bench.first_frame import main as first_frame_main

        sys.exit(first_frame_main(argv[2:]))
    if argv[:2] == ["bench", "engine"]:
        from fanout.bench.engine import main as engine_main

        sys.exit(engine_main(argv[2:]))
    args = parser.parse_args(argv)

    from fanout.admin.logs import LOGS, PYTHON_NAMES

    LOGS.configure(PYTHON_NAMES[args.log_level or "info"])
    LOGS.explicit = args.log_level is not None
    if args.command == "serve":
        from fanout.server import serve

        try:
            asyncio.run(serve(args.config))
        except KeyboardInterrupt:
            pass
