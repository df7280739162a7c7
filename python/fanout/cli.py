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
