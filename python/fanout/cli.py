"""The ``fanout`` command: ``fanout serve`` runs the server, ``fanout bench <name>`` measures it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

BENCH_MISSING = (
    "fanout bench: the benchmarks are not installed (they are not part of a production install); "
    "in a clone of the repository, ./scripts/setup installs them (or: pip install -e bench/)"
)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        sys.exit(bench(argv[1:]))
    args = _parser().parse_args(argv)

    from fanout.admin.logs import LOGS, PYTHON_NAMES

    LOGS.configure(PYTHON_NAMES[args.log_level or "info"])
    LOGS.explicit = args.log_level is not None
    from fanout.server import serve

    try:
        asyncio.run(serve(args.config))
    except KeyboardInterrupt:
        pass


def bench(argv: list[str]) -> int:
    """``fanout bench ...``: runs the benchmarks of the fanout-bench distribution (bench/ in the repository)."""
    try:
        from fanout_bench.cli import main as bench_main
    except ModuleNotFoundError as error:
        if error.name != "fanout_bench":
            raise
        print(BENCH_MISSING, file=sys.stderr)
        return 2
    return bench_main(argv)


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
    # Reached by `fanout --help` only: main() hands `fanout bench ...` to the benchmarks.
    commands.add_parser("bench", help="measure fanout: engine, load, first-frame (the benchmarks in bench/)")
    return parser
