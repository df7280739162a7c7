"""The ``fanout`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
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
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    bench = commands.add_parser("bench", help="measure fanout")
    benches = bench.add_subparsers(dest="bench", required=True)
    benches.add_parser("load", help="ramp real WebRTC viewers against fanout and/or Janus (see its --help)")
    benches.add_parser("engine", help="the data plane's throughput on this machine (see its --help)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["bench", "load"]:  # its own parser, imported only when asked for
        from fanout.bench.load import main as load_main

        sys.exit(load_main(argv[2:]))
    if argv[:2] == ["bench", "engine"]:
        from fanout.bench.engine import main as engine_main

        sys.exit(engine_main(argv[2:]))
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    if args.command == "serve":
        from fanout.server import serve

        try:
            asyncio.run(serve(args.config))
        except KeyboardInterrupt:
            pass
