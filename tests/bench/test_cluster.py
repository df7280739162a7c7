"""``fanout bench cluster``: the scale ramp's rule for a step that holds, and the failover run end to end
(redis-server, an origin and two edges on loopback, a few viewers)."""

from __future__ import annotations

import json
from pathlib import Path

from fanout_bench.cluster import main as cluster_main
from fanout_bench.cluster_scale import EdgeStep, fine_targets


def edge_step(loss: float, p95_viewer_loss: float, join_failures: int = 0) -> EdgeStep:
    return EdgeStep(edge="127.0.0.3", viewers=200, loss=loss, p95_viewer_loss=p95_viewer_loss, worst_viewer_loss=p95_viewer_loss,
                    cpu_cores=0.25, throttled_s=0.0, delivered_gbps=2.0, join_failures=join_failures)  # fmt: skip


def test_a_step_holds_at_1_percent_loss_with_95_percent_of_viewers_each_at_1_percent_or_less() -> None:
    assert edge_step(0.01, 0.01).holds()
    assert not edge_step(0.011, 0.0).holds()  # too much lost in all
    assert not edge_step(0.005, 0.02).holds()  # little in all, but more than 5 % of the viewers lost more than 1 %
    assert not edge_step(0.0, 0.0, join_failures=3).holds()  # 3 of 200 joins failed: over 1 %


def test_fine_steps_grow_by_the_factor_and_by_two_viewers_at_least() -> None:
    assert fine_targets(100, 1.05, 120) == [100, 105, 111, 117, 123]
    assert fine_targets(10, 1.05, 14) == [10, 12, 14]


def test_failover_every_viewer_of_the_lost_edge_watches_again_on_the_other(tmp_path: Path) -> None:
    out, png = tmp_path / "failover.json", tmp_path / "failover.png"
    status = cluster_main(["--failover", "--viewers", "3", "--edges", "2", "--modes", "kill,freeze", "--out", str(out), "--png", str(png)])
    assert status == 0
    document = json.loads(out.read_text())
    assert [run["mode"] for run in document["runs"]] == ["kill", "freeze"]
    for run in document["runs"]:
        assert run["failed"] == 0 and len(run["failovers"]) == 3, run
        assert {failover["node"] for failover in run["failovers"]} == {"edge-2"}  # the edge left, never the lost one
        for failover in run["failovers"]:
            assert 0 < failover["noticed"] <= failover["placed"] <= failover["playing"], failover
    killed = document["runs"][0]["failovers"]
    assert {failover["how"] for failover in killed} == {"websocket"}  # a killed process closes its connections
    assert {failover["how"] for failover in document["runs"][1]["failovers"]} == {"media"}  # a hung one does not
    assert png.stat().st_size > 0
