"""Real encoders (ffmpeg) feeding a mountpoint's ports."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.netns import NetworkNamespace


def ffmpeg_vp8_opus(host: str, audio_port: int, video_port: int) -> list[str]:
    """A live 640x360 30 fps VP8 test pattern and an Opus tone as RTP, as the README shows."""
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-map", "0:v", "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8",
        "-b:v", "1M", "-g", "30", "-f", "rtp", "-payload_type", "96",
        f"rtp://{host}:{video_port}?pkt_size=1200",
        "-map", "1:a", "-c:a", "libopus", "-b:a", "64k", "-f", "rtp", "-payload_type", "111",
        f"rtp://{host}:{audio_port}?pkt_size=1200",
    ]  # fmt: skip


def ffmpeg_vp8_simulcast(host: str, ports: list[int], sizes: list[tuple[int, int]], fps: int = 15) -> list[str]:
    """One ffmpeg encoding one live test pattern at each size (lowest first), each sent as
    VP8 RTP (15-bit picture IDs) to its port: the three encodings of a simulcast source."""
    width, height = sizes[-1]
    scales = ";".join(f"[in{i}]scale={w}:{h}[out{i}]" for i, (w, h) in enumerate(sizes))
    splits = "".join(f"[in{i}]" for i in range(len(sizes)))
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}",
        "-filter_complex", f"[0:v]split={len(sizes)}{splits};{scales}",
    ]  # fmt: skip
    for i, ((w, _), port) in enumerate(zip(sizes, ports, strict=True)):
        command += [
            "-map", f"[out{i}]", "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8",
            "-b:v", f"{max(100, w * 500 // 1280)}k", "-g", str(fps), "-f", "rtp", "-payload_type", "96",
            f"rtp://{host}:{port}?pkt_size=1200",
        ]  # fmt: skip
    return command


@contextmanager
def running(
    command: list[str], namespace: NetworkNamespace | None = None, *, stdout: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        namespace.command(*command) if namespace else command, stdin=subprocess.DEVNULL, stdout=stdout
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
