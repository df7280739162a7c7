"""The built-in test source: a process that sends a live VP8 test picture and an
Opus beep as RTP over UDP, paced in real time.

    python -m fanout.sources.testsource --host 127.0.0.1 --video-port 5004 --audio-port 5002

A port of 0 leaves that stream out. The process writes nothing to stdout, logs
only errors to stderr, and exits with status 0 on SIGTERM or SIGINT, or when
started with ``--exit-with-parent`` and its parent process goes away. The
server spawns it with the command line that :func:`testsource_command` builds.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

from fanout.sources.pacing import FrameClock
from fanout.sources.tracks import AudioTrack, VideoTrack

logger = logging.getLogger("fanout.sources.testsource")

PARENT_CHECK_INTERVAL = 1.0


@dataclass(frozen=True)
class TestSourceOptions:
    __test__ = False

    width: int = 640
    height: int = 360
    fps: int = 30
    keyframe_interval: float = 1.0
    video_pt: int = 96
    audio_pt: int = 111
    bitrate: int = 1_000_000


def testsource_command(
    host: str,
    video_port: int,
    audio_port: int,
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    keyframe_interval: float = 1.0,
    video_pt: int = 96,
    audio_pt: int = 111,
    bitrate: int = 1_000_000,
    exit_with_parent: bool = True,
) -> list[str]:
    """The command that runs the test source with this Python, sending to ``host``."""
    command = [
        sys.executable, "-m", "fanout.sources.testsource",
        "--host", host,
        "--video-port", str(video_port),
        "--audio-port", str(audio_port),
        "--width", str(width),
        "--height", str(height),
        "--fps", str(fps),
        "--keyframe-interval", str(keyframe_interval),
        "--video-pt", str(video_pt),
        "--audio-pt", str(audio_pt),
        "--bitrate", str(bitrate),
    ]  # fmt: skip
    if exit_with_parent:
        command.append("--exit-with-parent")
    return command


class Destination:
    """One UDP socket sending to ``host`` at the ports of each stream; send errors are logged once per kind."""

    def __init__(self, host: str) -> None:
        family, kind, protocol, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_DGRAM)[0]
        self.address = address[0]
        self.socket = socket.socket(family, kind, protocol)
        self._errors_seen: set[int | None] = set()

    def send(self, packets: list[bytes], port: int) -> None:
        for packet in packets:
            try:
                self.socket.sendto(packet, (self.address, port))
            except OSError as error:
                if error.errno not in self._errors_seen:
                    self._errors_seen.add(error.errno)
                    logger.error("sending RTP to %s port %d: %s", self.address, port, error)

    def close(self) -> None:
        self.socket.close()


@dataclass
class Schedule:
    """A stream's frame clock, the function that makes its packets and the port they go to."""

    clock: FrameClock
    packets: Callable[[int, float], list[bytes]]
    port: int


class TestSource:
    """Sends both streams until :meth:`stop`; ``run`` is the blocking loop."""

    __test__ = False

    def __init__(self, host: str, video_port: int, audio_port: int, options: TestSourceOptions) -> None:
        if not video_port and not audio_port:
            raise ValueError("neither a video nor an audio port to send to")
        self.destination = Destination(host)
        self.video = (
            VideoTrack(
                options.video_pt, options.width, options.height, options.fps, options.bitrate, options.keyframe_interval
            )
            if video_port
            else None
        )
        self.audio = AudioTrack(options.audio_pt) if audio_port else None
        self.video_port = video_port
        self.audio_port = audio_port
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True

    def run(self, parent: int | None = None) -> None:
        """Send until :meth:`stop`, or until the process's parent is no longer ``parent`` if given."""
        start = time.monotonic()
        wall_start = time.time()
        schedules = []
        if self.video:
            schedules.append(Schedule(FrameClock(start, self.video.frame_period), self.video.packets, self.video_port))
        if self.audio:
            schedules.append(Schedule(FrameClock(start, self.audio.frame_period), self.audio.packets, self.audio_port))
        next_parent_check = start + PARENT_CHECK_INTERVAL
        while not self.stopping:
            now = time.monotonic()
            for schedule in schedules:
                while (frame_number := schedule.clock.take(now)) is not None:
                    wall_time = wall_start + schedule.clock.media_time(frame_number)
                    self.destination.send(schedule.packets(frame_number, wall_time), schedule.port)
            if parent is not None and now >= next_parent_check:
                next_parent_check = now + PARENT_CHECK_INTERVAL
                if os.getppid() != parent:
                    break
            next_deadline = min(schedule.clock.deadline() for schedule in schedules)
            delay = next_deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.destination.close()


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = TestSourceOptions()
    parser = argparse.ArgumentParser(
        prog="python -m fanout.sources.testsource",
        description="Send a live VP8 test picture and an Opus beep as RTP over UDP.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="where to send (default: %(default)s)")
    parser.add_argument("--video-port", type=int, default=0, help="UDP port for VP8 RTP; 0 sends no video")
    parser.add_argument("--audio-port", type=int, default=0, help="UDP port for Opus RTP; 0 sends no audio")
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--fps", type=int, default=defaults.fps)
    parser.add_argument(
        "--keyframe-interval", type=float, default=defaults.keyframe_interval, help="seconds between key frames"
    )
    parser.add_argument("--video-pt", type=int, default=defaults.video_pt, help="VP8 RTP payload type")
    parser.add_argument("--audio-pt", type=int, default=defaults.audio_pt, help="Opus RTP payload type")
    parser.add_argument("--bitrate", type=int, default=defaults.bitrate, help="VP8 target bits per second")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process goes away")
    arguments = parser.parse_args(argv)
    if not arguments.video_port and not arguments.audio_port:
        parser.error("give --video-port, --audio-port or both")
    for name in ("video_port", "audio_port"):
        if not 0 <= getattr(arguments, name) < 65536:
            parser.error(f"--{name.replace('_', '-')} must be a UDP port")
    if arguments.width < 64 or arguments.height < 64 or arguments.width % 2 or arguments.height % 2:
        parser.error("--width and --height must be even and at least 64")
    if not 1 <= arguments.fps <= 120:
        parser.error("--fps must be from 1 to 120")
    if arguments.keyframe_interval <= 0 or arguments.bitrate <= 0:
        parser.error("--keyframe-interval and --bitrate must be positive")
    for name in ("video_pt", "audio_pt"):
        if not 0 <= getattr(arguments, name) < 128:
            parser.error(f"--{name.replace('_', '-')} must be from 0 to 127")
    return arguments


def main(argv: Sequence[str] | None = None) -> None:
    parent = os.getppid()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="testsource: %(message)s")
    arguments = parse_arguments(argv)
    options = TestSourceOptions(
        width=arguments.width,
        height=arguments.height,
        fps=arguments.fps,
        keyframe_interval=arguments.keyframe_interval,
        video_pt=arguments.video_pt,
        audio_pt=arguments.audio_pt,
        bitrate=arguments.bitrate,
    )
    try:
        source = TestSource(arguments.host, arguments.video_port, arguments.audio_port, options)
    except OSError as error:
        logger.error("cannot send to %s: %s", arguments.host, error)
        sys.exit(1)

    def stop(signal_number: int, frame: FrameType | None) -> None:
        source.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    source.run(parent if arguments.exit_with_parent else None)


if __name__ == "__main__":
    main()
