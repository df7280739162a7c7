"""The test source as the server runs it: a process sending RTP to loopback UDP ports."""

import os
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import av
import numpy as np
import pytest

from fanout.sources import testsource
from fanout.sources.pattern import TestPattern
from fanout.sources.rtp import RtpPacket
from fanout.sources.vp8 import Vp8Depacketizer, Vp8Frame

OPTIONS = {"width": 320, "height": 180, "fps": 15, "video_pt": 100, "keyframe_interval": 0.5}


@dataclass
class Arrival:
    wall_time: float
    packet: RtpPacket


@dataclass
class Run:
    video: list[Arrival] = field(default_factory=list)
    audio: list[Arrival] = field(default_factory=list)
    cpu_seconds: float = 0.0
    seconds: float = 0.0
    returncode: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def receive(
    streams: list[str], options: dict[str, Any], seconds: float, stop_signal: signal.Signals = signal.SIGTERM
) -> Run:
    """Start the source on fresh ports, collect RTP for ``seconds`` after the first packet, stop it."""
    sockets = {name: udp_socket() for name in streams}
    ports = {name: sock.getsockname()[1] for name, sock in sockets.items()}
    command = testsource.testsource_command("127.0.0.1", ports.get("video", 0), ports.get("audio", 0), **options)
    run = Run()
    selector = selectors.DefaultSelector()
    for name, sock in sockets.items():
        selector.register(sock, selectors.EVENT_READ, name)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first_packet = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for key, _ in selector.select(0.1):
                while True:
                    try:
                        data = key.fileobj.recv(2048)  # type: ignore[union-attr]
                    except BlockingIOError:
                        break
                    getattr(run, key.data).append(Arrival(time.time(), RtpPacket.parse(data)))
                    if first_packet is None:
                        first_packet = time.monotonic()
                        deadline = first_packet + seconds
                        cpu_before = cpu_seconds(process.pid)
        assert first_packet is not None, "no RTP from the test source within 10 s"
        run.seconds = time.monotonic() - first_packet
        run.cpu_seconds = cpu_seconds(process.pid) - cpu_before
        process.send_signal(stop_signal)
        run.stdout, run.stderr = process.communicate(timeout=5)
        run.returncode = process.returncode
    finally:
        if process.returncode is None:
            process.kill()
            process.wait()
        for sock in sockets.values():
            sock.close()
    return run


@pytest.fixture(scope="module")
def run() -> Run:
    return receive(["video", "audio"], {}, seconds=2.0)


@pytest.fixture(scope="module")
def video_only_run() -> Run:
    return receive(["video"], OPTIONS, seconds=1.2, stop_signal=signal.SIGINT)


def video_frames(run: Run) -> list[tuple[float, Vp8Frame]]:
    depacketizer = Vp8Depacketizer()
    frames = [(arrival.wall_time, frame) for arrival in run.video if (frame := depacketizer.push(arrival.packet))]
    assert depacketizer.frames_dropped == 0
    return frames


def decode_video(frames: list[Vp8Frame]) -> Iterator[av.VideoFrame]:
    decoder = av.CodecContext.create("vp8", "r")
    for frame in frames:
        yield from decoder.decode(av.Packet(frame.data))


def test_video_is_640x360_vp8_at_30_frames_a_second_with_key_frames(run: Run) -> None:
    arrivals = video_frames(run)
    frames = [frame for _, frame in arrivals]
    pictures = list(decode_video(frames))
    assert len(pictures) == len(frames)
    assert {(picture.width, picture.height) for picture in pictures} == {(640, 360)}
    assert 30 * run.seconds - 4 <= len(frames) <= 30 * run.seconds + 2
    assert {later.timestamp - earlier.timestamp for earlier, later in pairwise(frames)} == {3000}
    keyframes = [number for number, frame in enumerate(frames) if frame.keyframe]
    assert keyframes[:2] == [0, 30]  # the first frame, then one a second
    picture_ids = [frame.picture_id or 0 for frame in frames]
    assert None not in [frame.picture_id for frame in frames]
    assert {(later - earlier) % (1 << 15) for earlier, later in pairwise(picture_ids)} == {1}
    sent_over = arrivals[-1][0] - arrivals[0][0]
    assert abs(sent_over - (frames[-1].timestamp - frames[0].timestamp) / 90_000) < 0.1  # paced in real time


def test_video_packets_fit_the_mtu_with_the_marker_on_each_frames_last(run: Run) -> None:
    packets = [arrival.packet for arrival in run.video]
    assert {packet.payload_type for packet in packets} == {96}
    assert len({packet.ssrc for packet in packets}) == 1
    assert max(len(packet.payload) for packet in packets) <= 1200
    assert {(later.sequence_number - earlier.sequence_number) % 65536 for earlier, later in pairwise(packets)} == {1}
    for packet, after in pairwise(packets):
        assert packet.marker == (after.timestamp != packet.timestamp)
    assert sum(len(packet.payload) for packet in packets) * 8 / run.seconds < 1_500_000


def test_picture_is_the_test_pattern_moving(run: Run) -> None:
    frames = [frame for _, frame in video_frames(run)]
    pattern = TestPattern(640, 360)
    outside_caption = np.r_[0:100, 260:360]
    for number, picture in list(enumerate(decode_video(frames)))[::10]:
        luma = picture.to_ndarray(format="yuv420p")[:360][outside_caption].astype(np.float64)
        expected = pattern.render(number, 0.0)[:360][outside_caption].astype(np.float64)
        psnr = 10 * np.log10(255**2 / np.mean((luma - expected) ** 2))
        assert psnr > 30, f"frame {number} is not the test pattern (PSNR {psnr:.1f} dB)"


def test_caption_changes_every_frame(run: Run) -> None:
    frames = [frame for _, frame in video_frames(run)]
    pictures = [picture.to_ndarray(format="yuv420p")[150:250, 200:440] for picture in list(decode_video(frames))[:5]]
    for earlier, later in pairwise(pictures):
        assert np.mean(np.abs(earlier.astype(int) - later.astype(int)) > 60) > 0.002  # the milliseconds and the counter


def test_audio_is_48_khz_opus_in_20_ms_packets(run: Run) -> None:
    packets = [arrival.packet for arrival in run.audio]
    assert {packet.payload_type for packet in packets} == {111}
    assert len({packet.ssrc for packet in packets}) == 1
    assert 50 * run.seconds - 4 <= len(packets) <= 50 * run.seconds + 2
    assert {later.timestamp - earlier.timestamp for earlier, later in pairwise(packets)} == {960}
    decoder = av.CodecContext.create("opus", "r")
    frames = [frame for packet in packets for frame in decoder.decode(av.Packet(packet.payload))]
    assert len(frames) == len(packets)
    assert {(frame.sample_rate, frame.samples, frame.layout.name) for frame in frames} == {(48_000, 960, "stereo")}


def test_audio_beeps_440_hz_on_every_wall_clock_second(run: Run) -> None:
    decoder = av.CodecContext.create("opus", "r")
    left = []
    for arrival in run.audio:
        (frame,) = decoder.decode(av.Packet(arrival.packet.payload))
        left.append(frame.to_ndarray()[0])
    loud = [bool(np.sqrt(np.mean(samples**2)) > 0.05) for samples in left]
    assert 0.15 <= np.mean(loud) <= 0.3  # 200 ms of every second
    onsets = [arrival.wall_time for arrival, now, before in zip(run.audio[1:], loud[1:], loud) if now and not before]
    assert onsets
    for onset in onsets:
        offset = (onset + 0.5) % 1 - 0.5
        assert -0.1 < offset < 0.1, f"a beep began {offset:+.3f} s from the second"
    tone = np.concatenate([samples for samples, is_loud in zip(left, loud) if is_loud])
    spectrum = np.abs(np.fft.rfft(tone[:9600]))
    assert abs(np.argmax(spectrum) * 48_000 / 9600 - 440) <= 5


def test_streams_have_their_own_random_ssrcs(run: Run, video_only_run: Run) -> None:
    assert run.video[0].packet.ssrc != run.audio[0].packet.ssrc
    assert video_only_run.video[0].packet.ssrc != run.video[0].packet.ssrc


def test_sigterm_ends_it_cleanly_and_quietly(run: Run) -> None:
    assert run.returncode == 0
    assert run.stdout == b""
    assert run.stderr == b""


def test_costs_modest_cpu(run: Run) -> None:
    assert run.cpu_seconds / run.seconds < 0.5, f"{100 * run.cpu_seconds / run.seconds:.0f}% of a core"


def test_options_reach_the_stream_and_sigint_stops_a_video_only_source(video_only_run: Run) -> None:
    run = video_only_run
    assert run.audio == []
    frames = [frame for _, frame in video_frames(run)]
    assert {arrival.packet.payload_type for arrival in run.video} == {100}
    assert {(picture.width, picture.height) for picture in decode_video(frames)} == {(320, 180)}
    assert {later.timestamp - earlier.timestamp for earlier, later in pairwise(frames)} == {6000}
    assert [number for number, frame in enumerate(frames) if frame.keyframe][:3] == [0, 8, 16]  # round(0.5 s * 15 fps)
    assert run.returncode == 0


def test_command_runs_this_python_and_round_trips_every_option() -> None:
    command = testsource.testsource_command("::1", 5004, 0, width=1280, height=720, fps=25, keyframe_interval=2.0,
                                 video_pt=98, audio_pt=109, bitrate=2_500_000)  # fmt: skip
    assert command[:3] == [sys.executable, "-m", "fanout.sources.testsource"]
    arguments = testsource.parse_arguments(command[3:])
    assert (arguments.host, arguments.video_port, arguments.audio_port) == ("::1", 5004, 0)
    assert (arguments.width, arguments.height, arguments.fps, arguments.keyframe_interval) == (1280, 720, 25, 2.0)
    assert (arguments.video_pt, arguments.audio_pt, arguments.bitrate) == (98, 109, 2_500_000)
    assert arguments.exit_with_parent


@pytest.mark.parametrize(
    "arguments",
    [
        [],
        ["--video-port", "0", "--audio-port", "0"],
        ["--video-port", "70000"],
        ["--video-port", "5004", "--width", "641"],
        ["--video-port", "5004", "--video-pt", "128"],
        ["--video-port", "5004", "--fps", "0"],
    ],
)
def test_bad_arguments_are_refused(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        testsource.parse_arguments(arguments)
    assert exit.value.code == 2
    assert capsys.readouterr().out == ""


def test_exits_when_its_parent_goes_away() -> None:
    command = shlex.join(testsource.testsource_command("127.0.0.1", 9, 0))
    parent = subprocess.Popen(["sh", "-c", f"{command} & echo $!; sleep 1"], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert parent.wait(5) == 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and is_running(pid):
        time.sleep(0.05)
    running = is_running(pid)
    if running:
        os.kill(pid, signal.SIGKILL)
    assert not running, "the test source outlived its parent by 3 s"


def is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
