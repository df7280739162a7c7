"""``fanout bench``: the benchmarks live outside the product (bench/, the fanout-bench
distribution); without them, or without the engine's bench functions, the command
says how to get them."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import fanout._engine
import pytest
from fanout.cli import main


def _exit_code(argv: list[str]) -> int | str | None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    return stopped.value.code


def test_without_the_benchmarks_installed_fanout_bench_says_how_to_install_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As a production install: no fanout_bench anywhere on the path.
    for name in [name for name in sys.modules if name.split(".")[0] == "fanout_bench"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if not (Path(entry) / "fanout_bench").is_dir()])
    importlib.invalidate_caches()
    assert _exit_code(["bench", "engine", "--viewers", "10"]) == 2
    error = capsys.readouterr().err
    assert "the benchmarks are not installed" in error
    assert "./scripts/setup" in error and "pip install -e bench/" in error


def test_an_unknown_benchmark_is_named_with_the_ones_there_are(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["bench", "engines"]) == 2
    error = capsys.readouterr().err
    assert "engines" in error
    assert "engine" in error and "load" in error and "first-frame" in error


def test_fanout_bench_lists_the_benchmarks(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["bench", "--help"]) == 0
    output = capsys.readouterr().out
    assert "engine" in output and "load" in output and "first-frame" in output


def test_an_engine_built_without_the_bench_feature_is_named_as_the_cause(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delattr(fanout._engine, "bench_send")  # as `pip install .` builds it
    monkeypatch.delattr(fanout._engine, "bench_protect")
    assert _exit_code(["bench", "engine", "--viewers", "10"]) == 2
    error = capsys.readouterr().err
    assert 'cargo feature "bench"' in error and "./scripts/setup" in error


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "soak", "--minutes", "1"], "--minutes must be at least 2"),
        (["bench", "soak", "--video-size", "320x"], "expected WIDTHxHEIGHT"),
        (["bench", "control", "--viewers", "0"], "--viewers and --rounds must be at least 1"),
        (["bench", "control", "--receive-buffers", "-1"], "--receive-buffers not negative"),
    ],
)
def test_the_soak_and_control_benchmarks_refuse_bad_options_before_starting_anything(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code(argv) == 2
    assert message in capsys.readouterr().err
