"""``fanout bench load``: its accounting is honest, and the command runs end to end.

Both tests run a real fanout in a private network namespace (root, as CI).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fanout_bench.load import main as load_main
from fanout_bench.load.netns import bench_namespace
from fanout_bench.load.pool import PoolConfig, SamplePool, ViewerPool
from fanout_bench.load.ramp import RampPlan, RampRunner, Step
from fanout_bench.load.servers import AUDIO_PORT, MOUNTPOINT, VIDEO_PORT, FanoutServer
from fanout_bench.load.source import STAMP_OFFSET, RtpSource, SourceShape, Stamp

CHEAP, SAMPLES = 16, 4


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the load bench makes a network namespace and must run as root (as CI does)")


def _source(cpu: int) -> RtpSource:
    return RtpSource(SourceShape(2e6), ("127.0.0.1", VIDEO_PORT), ("127.0.0.1", AUDIO_PORT), cpu=cpu).start()


async def _count_one_burst(
    server: FanoutServer, cpu: int, feedback: bool = False
) -> tuple[int, list[int], list[dict[str, float]]]:
    """Viewers join a running stream; then, between two quiet moments, the source sends one burst.

    Returns what the source sent in the burst, each cheap viewer's kernel-counted
    RTP (with ``feedback``, plus the samples its filter kept) and each sample
    viewer's decrypted window. With ``feedback``, it waits until the server's
    engine has read the first cheap viewer's feedback and estimated it.
    """
    config = PoolConfig(
        url=server.url("ws"),
        mountpoint=MOUNTPOINT,
        host=server.viewer_host,
        srtp_profile="AEAD_AES_128_GCM",
        feedback=feedback,
    )
    cheap = ViewerPool(config)
    await cheap.start()
    samples = SamplePool(PoolConfig(**{**config.__dict__, "sample": True}))
    source = _source(cpu)
    try:
        assert (await samples.add(SAMPLES, 20)).joined == SAMPLES
        report = await cheap.add(CHEAP, 20)
        assert report.joined == CHEAP, report.errors
        source.stop()  # a frame is never cut: the source stops between packets of whole frames
        await asyncio.sleep(0.5)
        before = cheap.delivered()
        await samples.windows()
        burst = _source(cpu)
        await asyncio.sleep(3)
        burst.stop()
        sent = burst.sent()
        sent_packets = sent["video_packets"] + sent["audio_packets"]
        # Until every cheap viewer's kernel has counted the whole burst (or 20 s: then it lost some).
        deadline = time.monotonic() + 20
        after = cheap.delivered()
        while any(after[i][0] - before[i][0] < sent_packets for i in before) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            after = cheap.delivered()
        await asyncio.sleep(0.5)  # the sample viewers' process reads what their sockets hold
        windows = await samples.windows()
        kernel_rtp = [after[i][0] - before[i][0] for i in before]
        if feedback:
            viewer = cheap.viewers[0]
            assert viewer.api.session_id is not None and viewer.handle_id is not None
            deadline = time.monotonic() + 20
            while True:
                info = server.handle_info(viewer.api.session_id, viewer.handle_id).get("plugin_specific", {})
                assert isinstance(info, dict)
                if info.get("estimate") and info.get("engine", {}).get("transport_feedbacks", 0) > 0:
                    break
                assert time.monotonic() < deadline, f"the server read no feedback: {info}"
                await asyncio.sleep(0.2)
            assert info["transport_cc"] is True
            assert viewer.sampled_rtp > 0 and viewer.feedback_sent > 0
        return sent_packets, kernel_rtp, windows
    finally:
        await samples.close()
        await cheap.close()


@pytest.mark.parametrize("feedback", [False, True], ids=["no feedback", "transport feedback"])
def test_kernel_counted_delivery_agrees_with_what_sample_viewers_decrypt(tmp_path: Path, feedback: bool) -> None:
    """With transport feedback, the same from viewers whose filter keeps some RTP, and the server reads it."""
    _require_root()
    cpus = sorted(os.sched_getaffinity(0))
    with bench_namespace():
        # Nothing shed when the machine is busy: the test counts every packet (shedding is tested in tests/engine).
        late = ["max_send_delay_ms = 5000"]
        server = FanoutServer(tmp_path / "fanout", cpus[0], late, transport_cc_everywhere=feedback).start()
        try:
            sent, kernel_rtp, windows = asyncio.run(_count_one_burst(server, cpus[-1], feedback))
        finally:
            server.stop()
    decrypted = [w["rtp_packets"] for w in windows]
    assert sent > 500
    # Every sample viewer decrypted every packet the source sent, and saw no gap.
    assert decrypted == [sent] * SAMPLES, (sent, windows)
    assert all(w["lost"] == 0 and w["undecryptable"] == 0 for w in windows)
    # Each cheap viewer, counted by the kernel alone (it never reads RTP), got exactly as many.
    assert kernel_rtp == [sent] * CHEAP, (sent, kernel_rtp)


def test_the_command_ramps_against_fanout_and_writes_results_and_plot(
    tmp_path: Path,
) -> None:
    _require_root()
    cpus = sorted(os.sched_getaffinity(0))
    output = tmp_path / "load"
    command = [
        sys.executable, "-m", "fanout", "bench", "load",
        "--server", "fanout", "--rate", "2M", "--srtp", "cm", "--transport", "http",
        "--start", "6", "--min-step", "4", "--max-viewers", "10", "--samples", "2",
        "--settle", "1", "--window", "1.5", "--join-rate", "20", "--feedback", "off,twcc",
        "--server-cpu", str(cpus[0]), "--load-cpu", str(cpus[-1]), "--receive-on-load-cpu",
        "--output", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(output.with_suffix(".json").read_text())
    assert results["meta"]["receive_on_load_cpu"] is True
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    off, on = results["ramps"]
    for ramp, feedback in ((off, "off"), (on, "twcc")):
        assert (ramp["server"], ramp["rate"], ramp["srtp"], ramp["transport"], ramp["feedback"]) == (
            "fanout",
            "2M",
            "cm",
            "http",
            feedback,
        )
        assert [step["viewers"] for step in ramp["steps"]][:1] == [6]  # a busy machine may end the ramp there
        assert all(step["delivered_pps"] > 0 and step["server_cpu"] >= 0 for step in ramp["steps"])
    assert "viewers held" in result.stdout
    # With feedback every viewer sends some each 100 ms, and the server's engine reads it.
    first = on["steps"][0]
    assert first["feedback_per_viewer_s"] > 1 and first["feedback_packets_per_message"] > 1, first
    assert first["feedback_probe"]["transport_cc"] is True and first["feedback_probe"]["transport_feedbacks"] > 0
    assert off["steps"][0]["feedback_probe"] == {}
    (comparison,) = results["feedback"]
    assert comparison["capacity"] == [off["capacity"], on["capacity"]] and comparison["steps"][0]["viewers"] == [6, 6]
    assert "with feedback" in result.stdout

    # --replot recomputes the derived figures and draws the plot again, running nothing.
    output.with_suffix(".png").unlink()
    assert load_main(["--replot", str(output.with_suffix(".json"))]) == 0
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_overload_measures_each_level_with_loss_latency_and_control_plane_times(tmp_path: Path) -> None:
    _require_root()
    cpus = sorted(os.sched_getaffinity(0))
    output = tmp_path / "overload"
    command = [
        sys.executable, "-m", "fanout", "bench", "load", "--overload", "--capacity", "fanout=6",
        "--server", "fanout", "--rate", "2M", "--srtp", "gcm", "--transport", "http", "--samples", "2",
        "--settle", "1", "--window", "2", "--join-rate", "20", "--fanout-option", "data_plane_nice = -20",
        "--control-samples", "20", "--server-cpu", str(cpus[0]), "--load-cpu", str(cpus[-1]), "--output", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(output.with_suffix(".json").read_text())
    assert output.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (run,) = results["overload"]
    assert (run["server"], run["capacity"], run["capacity_source"], run["error"]) == ("fanout", 6, "given", "")
    assert "max_connections_per_address" in run["settings"]["janus.jcfg"]
    levels = run["levels"]
    # 80/100/120/150% of 6 viewers, never fewer than the sample viewers plus one.
    assert [(level["percent"], level["step"]["viewers"]) for level in levels] == [(80, 5), (100, 6), (120, 7), (150, 9)]
    assert run["sample_positions"] == [0, 2]  # spread over the first level's joins, cheap viewers between
    # The server runs at --server-nice (-10) on top of the bench's own -5, its engine's threads at
    # fanout.data_plane_nice.
    engine_threads = {name: nice for name, nice in run["thread_nice"].items() if name.startswith("fanout-")}
    assert engine_threads == {"fanout-worker-0": -20, "fanout-receiver": -20, "fanout-socket": -20}
    control_plane = max(-20, os.getpriority(os.PRIO_PROCESS, 0) - 5 - 10)
    assert {nice for name, nice in run["thread_nice"].items() if not name.startswith("fanout-")} == {control_plane}
    for level in levels:
        assert len(level["viewer_losses"]) == level["step"]["viewers"]
        assert len(level["sample_p99_ms"]) == 2 and level["step"]["latency_ms"]["p99"] is not None
        # Where the time goes: kernel-stamped arrivals, the engine's own counters, the server's threads.
        step = level["step"]
        assert step["read_delay_ms"]["p99"] is not None and step["latency_rest_ms"]["p99"] is not None
        assert step["engine"]["source_packets"] > 0 and step["engine"]["dropped_late"] >= 0
        assert step["server_threads_cpu"].keys() >= {"fanout-worker-0", "fanout-receiver"}
        # The floor of a keyframe packet's latency: a keyframe to every viewer at the worker's cost per packet.
        assert level["keyframe_fanout_ms"] > 0
        # The probe ran on past the 2 s window (~13 answers each) until each request had answered 20 times.
        assert level["control_wanted"] == 20 and level["control_s"] > 2
        for request in ("ping", "info", "get_status"):
            times = level["control_ms"][request]
            assert times["answered"] >= 20 and times["p99"] is not None, (request, times)
            assert len(times["times_ms"]) == times["answered"]
    assert results["summary"]["fanout"]["capacity"] == 6
    assert "get_status p50/p99/max (n)" in result.stdout
    assert "waiting for 20 answers each" in result.stderr


def test_loss_distribution_and_capacity_arguments() -> None:
    from fanout_bench.load.command import build_parser
    from fanout_bench.load.ramp import loss_distribution

    losses = [0.0] * 95 + [0.02] * 4 + [0.5]
    assert loss_distribution(losses) == pytest.approx(
        {"p50": 0.0, "p95": 0.0, "p99": 0.02, "max": 0.5, "worst_5pct_mean": (4 * 0.02 + 0.5) / 5}
    )
    assert loss_distribution([]) == {}
    assert build_parser().parse_args(["--capacity", "fanout=800,janus=90"]).capacity == {"fanout": 800, "janus": 90}
    for bad in ("fanout", "nginx=3", "janus=0", "fanout=many"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--capacity", bad])


def test_overload_levels_variants_and_rounds() -> None:
    from fanout_bench.load.command import _overload_runs, build_parser

    args = build_parser().parse_args(
        ["--overload", "--levels", "80,100", "--rounds", "2", "--server", "both",
         "--fanout-variant", "priority: data_plane_nice = -20", "--fanout-variant", "level:data_plane_nice = -10"]
    )  # fmt: skip
    assert args.levels == (80, 100)
    assert _overload_runs(args, ["fanout", "janus"]) == [
        (1, "fanout", ("priority", "data_plane_nice = -20")),
        (1, "fanout", ("level", "data_plane_nice = -10")),
        (1, "janus", ("", "")),
        (2, "fanout", ("priority", "data_plane_nice = -20")),
        (2, "fanout", ("level", "data_plane_nice = -10")),
        (2, "janus", ("", "")),
    ]
    assert build_parser().parse_args([]).levels == (80, 100, 120, 150)
    for bad in (["--levels", "80,x"], ["--levels", ""], ["--fanout-variant", "no line"], ["--fanout-variant", ": a = 1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)


def _wait_for(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.01)


def test_a_held_source_sends_nothing_until_released_and_then_goes_on() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    address = receiver.getsockname()
    source = RtpSource(SourceShape(2e6), address, address).start()

    def read_all() -> list[bytes]:
        datagrams = []
        while True:
            try:
                datagrams.append(receiver.recv(2048))
            except BlockingIOError:
                return datagrams

    try:
        _wait_for(lambda: source.sent()["video_packets"] > 0, "packet sent")
        asyncio.run(source.hold())
        sent = source.sent()
        read_all()
        time.sleep(0.3)  # longer than a frame and an audio packet apart
        assert read_all() == [] and source.sent() == sent

        released_ns = time.monotonic_ns()
        source.release()
        _wait_for(lambda: source.sent()["frames"] > sent["frames"], "frame after the release")
        later = read_all()
        stamps = [Stamp.find(datagram[12:]) for datagram in later]
        assert later and all(stamp is not None and stamp.sent_ns >= released_ns for stamp in stamps)
        assert all(datagram[12 + STAMP_OFFSET : 12 + STAMP_OFFSET + 4] == b"FoLd" for datagram in later)
    finally:
        source.stop()
        receiver.close()


class _HeldSource:
    """A stand-in source that says whether it was held when the bench read its count."""

    def __init__(self) -> None:
        self.held = False
        self.packets = 0

    async def hold(self) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False
        self.packets += 100  # what it sends until held again

    def sent(self) -> dict[str, int]:
        assert self.held, "the source's count was read while it was sending"
        return {"video_packets": self.packets, "audio_packets": 0}


class _CountingViewers:
    def __init__(self, source: _HeldSource) -> None:
        self.source = source

    def delivered(self) -> dict[int, tuple[int, int]]:
        assert self.source.held, "the viewers' counts were read while the source was sending"
        return {0: (self.source.packets, 0), 1: (self.source.packets, 0)}

    def feedback_counts(self) -> tuple[int, int]:
        return 0, 0


class _NoSamples:
    async def windows(self) -> list[dict[str, Any]]:
        return []


class _ThisProcess:
    pid, cpu = os.getpid(), 0

    def engine_counters(self) -> dict[str, float]:
        return {}


def test_both_ends_of_a_window_are_read_while_the_source_is_held() -> None:
    """A packet on its way when the counts are read would count as lost at one end of the window."""
    source = _HeldSource()
    runner = RampRunner.__new__(RampRunner)
    runner.server, runner.source, runner.load_cpu = _ThisProcess(), source, 0  # type: ignore[assignment]
    runner.plan = RampPlan(window=0.05)
    runner.config = PoolConfig(url="", mountpoint=MOUNTPOINT, host="127.0.0.1", srtp_profile="AEAD_AES_128_GCM")
    step = Step(viewers=2)
    asyncio.run(runner._measure(step, _CountingViewers(source), _NoSamples()))  # type: ignore[arg-type]
    assert not source.held
    assert step.source_pps > 0 and step.viewer_loss["max"] == 0.0


def test_a_sample_viewer_times_each_packet_to_its_arrival_and_keeps_its_own_read_delay_apart() -> None:
    import pylibsrtp
    from fanout_bench.load.media import MediaMeter
    from fanout_bench.load.source import _STAMP, STAMP_MAGIC, rtp_header, vp8_payload

    key = bytes(range(28))
    sender = pylibsrtp.Session(
        pylibsrtp.Policy(
            key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
        )
    )  # fmt: skip
    meter = MediaMeter("AEAD_AES_128_GCM", key)
    sent_ns = 1_000_000_000
    # Frame 30 is a keyframe (the first of a second), frame 31 an interframe; 2 ms to the socket, then 5 ms to the read.
    for sequence, frame in enumerate((30, 30, 31)):
        payload = vp8_payload(1188, sequence == 0, frame == 30)
        _STAMP.pack_into(payload, STAMP_OFFSET, STAMP_MAGIC, sent_ns, frame, sequence % 2, 2)
        packet = sender.protect(rtp_header(96, False, sequence, 0, 1234) + bytes(payload))
        meter.rtp(packet, received_ns=sent_ns + 7_000_000, arrived_ns=sent_ns + 2_000_000)
    meter.rtp(packet, received_ns=sent_ns + 7_000_000)  # a replay: refused, and not timed
    window = meter.window()
    assert window.latencies_ms == pytest.approx([2.0, 2.0, 2.0])
    assert window.keyframe_latencies_ms == pytest.approx([2.0, 2.0])
    assert window.other_latencies_ms == pytest.approx([2.0])
    assert window.read_delays_ms == pytest.approx([5.0, 5.0, 5.0])
    assert (window.rtp_packets, window.undecryptable) == (3, 1)
