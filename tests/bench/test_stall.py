"""``fanout bench stall`` runs, small: the engine's threads ahead of the control plane, then level
with it, each run with its collections timed and its late drops counted (figures belong to the
benchmark, not to this test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_stall_runs_priority_and_level_and_writes_its_results(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    output = tmp_path / "stall"
    command = [
        sys.executable, "-m", "fanout", "bench", "stall", "--viewers", "20", "--seconds", "2", "--rounds", "1",
        "--heap-objects", "20000", "--core", str(cpus[0]), "--source-cpu", str(cpus[-1]), "--ahead", "5",
        "--output", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(output.with_suffix(".json").read_text())
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    control_plane = os.getpriority(os.PRIO_PROCESS, 0)
    priority, level = results["runs"]
    assert (priority["variant"], priority["data_plane_nice"], priority["control_plane_nice"]) == (
        "priority",
        control_plane - 5 if os.geteuid() == 0 else control_plane,
        control_plane,
    )
    assert (level["variant"], level["data_plane_nice"]) == ("level", control_plane)
    for run in (priority, level):
        assert len(run["stall_ms"]) == 2 and run["sent_packets"] > 0 and run["source_packets"] > 0
        assert run["dropped_late"] >= 0 and 0 <= run["late_fraction"] <= 1
