"""``fanout bench soak``: fanout under time. Viewers churn (10% a minute, half over the Janus API, half
over WHEP), the source restarts every few minutes, one client a minute vanishes without a hangup; RSS
and open file descriptors are sampled every few seconds; at the end every viewer leaves and the
sessions, handles, PeerConnections and engine viewers left (all must be 0) and each viewer's loss are
reported, with fanout's RSS at the end of the churn against its level after the warm-up (must be
within 5%). JSON and a plot in --out."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

SAMPLE_SECONDS = 5.0
RSS_GROWTH_ALLOWED = 0.05
STREAMING_JCFG = """general: {{
}}
soak: {{
	type = "rtp"
	id = 1
	description = "soak"
	media = (
		{{ type = "audio", mid = "a", port = {audio}, pt = 111, codec = "opus" }},
		{{ type = "video", mid = "v", port = {video}, pt = 96, codec = "vp8" }}
	)
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(folder: Path) -> dict[str, int]:
    ports = {name: free_port() for name in ("http", "webrtc", "metrics", "audio", "video")}
    (folder / "janus.jcfg").write_text(
        "general: {\n\tsession_timeout = 60\n}\nnat: {\n\tnat_1_1_mapping = \"127.0.0.1\"\n}\n"
        f"fanout: {{\n\twebrtc_port = {ports['webrtc']}\n\twebrtc_interface = \"127.0.0.1\"\n"
        f"\tmetrics_port = {ports['metrics']}\n\tmax_connections_per_address = 0\n}}\n"
    )
    (folder / "janus.transport.http.jcfg").write_text(f'general: {{\n\thttp = true\n\tport = {ports["http"]}\n\tbase_path = "/janus"\n}}\n')
    (folder / "janus.transport.websockets.jcfg").write_text("general: {\n\tws = false\n}\n")
    (folder / "janus.plugin.streaming.jcfg").write_text(STREAMING_JCFG.format(audio=ports["audio"], video=ports["video"]))
    return ports


class Viewer:
    """One aiortc viewer, over the Janus API or WHEP."""

    def __init__(self, http: aiohttp.ClientSession, ports: dict[str, int], kind: str) -> None:
        self.http, self.ports, self.kind = http, ports, kind
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.janus = f"http://127.0.0.1:{ports['http']}/janus"
        self.session: int | None = None
        self.location: str | None = None
        self.pc.on("track", lambda track: asyncio.ensure_future(self._drain(track)))

    async def _drain(self, track: Any) -> None:
        with contextlib.suppress(Exception):
            while True:
                await track.recv()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(self.janus + path, json={"transaction": secrets.token_hex(4), **body}) as reply:
            return await reply.json()  # type: ignore[no-any-return]

    async def join(self) -> None:
        if self.kind == "whep":
            self.pc.addTransceiver("audio", direction="recvonly")
            self.pc.addTransceiver("video", direction="recvonly")
            await self.pc.setLocalDescription(await self.pc.createOffer())
            url = f"http://127.0.0.1:{self.ports['http']}/whep/endpoint/1"
            async with self.http.post(url, data=self.pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as reply:
                answer = await reply.text()
                if reply.status != 201:
                    raise RuntimeError(f"WHEP {reply.status}: {answer}")
                self.location = reply.headers["Location"]
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            return
        self.session = (await self._post("", {"janus": "create"}))["data"]["id"]
        handle = (await self._post(f"/{self.session}", {"janus": "attach", "plugin": "janus.plugin.streaming"}))["data"]["id"]
        await self._post(f"/{self.session}/{handle}", {"janus": "message", "body": {"request": "watch", "id": 1}})
        offer = await self._event(lambda event: "jsep" in event)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer["jsep"]["sdp"], type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        jsep = {"type": "answer", "sdp": self.pc.localDescription.sdp}
        await self._post(f"/{self.session}/{handle}", {"janus": "message", "body": {"request": "start"}, "jsep": jsep})
        self.keepalive = asyncio.ensure_future(self._keep_alive())

    async def _event(self, predicate: Any) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            async with self.http.get(f"{self.janus}/{self.session}?maxev=1") as reply:
                event = await reply.json()
            if predicate(event):
                return event  # type: ignore[no-any-return]
        raise RuntimeError("no offer from fanout")

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(20)
            await self._post(f"/{self.session}", {"janus": "keepalive"})

    async def loss(self) -> dict[str, int]:
        received = lost = 0
        for stat in (await self.pc.getStats()).values():
            if stat.type == "inbound-rtp":
                received += stat.packetsReceived
                lost += max(0, stat.packetsLost)
        return {"received": received, "lost": lost}

    def go_silent(self) -> None:
        """Close the viewer's UDP sockets without a word: no STUN, DTLS close or RTCP from it again."""
        for transceiver in self.pc.getTransceivers():
            for protocol in transceiver.receiver.transport.transport._connection._protocols:
                protocol.transport.close()

    async def leave(self, *, hang_up: bool = True) -> None:
        if hang_up:
            with contextlib.suppress(Exception):
                if self.kind == "whep" and self.location:
                    await self.http.delete(f"http://127.0.0.1:{self.ports['http']}{self.location}")
                elif self.session is not None:
                    self.keepalive.cancel()
                    await self._post(f"/{self.session}", {"janus": "destroy"})
        else:
            self.go_silent()
            if self.kind == "janus":
                self.keepalive.cancel()
        await self.pc.close()


def sample_process(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return {"rss_mib": rss_kib / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


async def metrics(http: aiohttp.ClientSession, port: int) -> dict[str, float]:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as reply:
        text = await reply.text()
    wanted = {"fanout_sessions", "fanout_handles", "fanout_peerconnections", 'fanout_viewers{mountpoint="1"}'}
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.split(" ")[0] in wanted}


def start_source(ports: dict[str, int], args: argparse.Namespace) -> subprocess.Popen[bytes]:
    from fanout.sources.testsource import testsource_command

    width, height = args.video_size
    command = testsource_command(
        "127.0.0.1", video_port=ports["video"], audio_port=ports["audio"], width=width, height=height, bitrate=args.video_bitrate
    )
    return subprocess.Popen(command)


def rss_levels(samples: list[dict[str, float]], warm_up_seconds: float, churn_end: float) -> dict[str, float]:
    """fanout's median RSS over the minute after the warm-up and over the last minute of the churn."""

    def median_rss(start: float, end: float) -> float:
        window = sorted(s["rss_mib"] for s in samples if start <= s["t"] < end)
        if not window:
            raise RuntimeError(f"no RSS sample between {start:.0f} s and {end:.0f} s")
        return window[len(window) // 2]

    after_warm_up = median_rss(warm_up_seconds, warm_up_seconds + 60)
    at_end = median_rss(churn_end - 60, churn_end)
    return {"after_warm_up_mib": after_warm_up, "at_end_mib": at_end, "growth": at_end / after_warm_up - 1}


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="fanout-soak-"))
    ports = write_config(folder)
    server = subprocess.Popen([sys.executable, "-m", "fanout", "serve", "--config", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    source = start_source(ports, args)
    samples: list[dict[str, float]] = []
    events: list[dict[str, Any]] = []
    finished: list[dict[str, Any]] = []
    start = time.monotonic()
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    await metrics(http, ports["metrics"])
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("fanout did not start")
                await asyncio.sleep(0.5)
            viewers: list[Viewer] = []
            for index in range(args.viewers):
                viewer = Viewer(http, ports, "janus" if index % 2 else "whep")
                await viewer.join()
                viewers.append(viewer)
            next_minute, next_restart, next_sample = 60.0, args.source_restart_minutes * 60, 0.0
            while (elapsed := time.monotonic() - start) < args.minutes * 60:
                if elapsed >= next_sample:
                    samples.append({"t": elapsed, **sample_process(server.pid), "viewers": len(viewers)})
                    next_sample += SAMPLE_SECONDS
                if elapsed >= next_minute:
                    churn = max(1, len(viewers) // 10)
                    for viewer in random.sample(viewers, churn):
                        viewers.remove(viewer)
                        finished.append({"kind": viewer.kind, **await viewer.loss()})
                        await viewer.leave()
                    for index in range(churn):
                        viewer = Viewer(http, ports, "janus" if index % 2 else "whep")
                        await viewer.join()
                        viewers.append(viewer)
                    vanishing = Viewer(http, ports, "janus")
                    await vanishing.join()
                    await asyncio.sleep(2)
                    await vanishing.leave(hang_up=False)
                    events.append({"t": elapsed, "event": f"churned {churn}, one client vanished"})
                    latest = samples[-1]
                    print(f"{elapsed / 60:5.1f} min: RSS {latest['rss_mib']:.1f} MiB, {latest['fds']:.0f} fds, {len(viewers)} viewers", flush=True)
                    next_minute += 60
                if elapsed >= next_restart:
                    source.terminate()
                    source.wait(5)
                    source = start_source(ports, args)
                    next_restart += args.source_restart_minutes * 60
                    events.append({"t": elapsed, "event": "source restarted"})
                await asyncio.sleep(1)
            churn_end = time.monotonic() - start
            for viewer in viewers:
                finished.append({"kind": viewer.kind, **await viewer.loss()})
                await viewer.leave()
            left = await metrics(http, ports["metrics"])
            wait_until = time.monotonic() + 100  # vanished clients: consent (30 s) and session timeout (60 s)
            while any(left.values()) and time.monotonic() < wait_until:
                await asyncio.sleep(2)
                left = await metrics(http, ports["metrics"])
            samples.append({"t": time.monotonic() - start, **sample_process(server.pid), "viewers": 0})
    finally:
        source.terminate()
        server.send_signal(signal.SIGTERM)
        server.wait(15)
    losses = sorted(v["lost"] / max(1, v["received"] + v["lost"]) for v in finished)
    rss = rss_levels(samples, warm_up_seconds(args.minutes), churn_end)
    return {
        "minutes": args.minutes,
        "viewers": args.viewers,
        "source_restart_minutes": args.source_restart_minutes,
        "video": {"width": args.video_size[0], "height": args.video_size[1], "bitrate": args.video_bitrate},
        "rss": {**rss, "warm_up_seconds": warm_up_seconds(args.minutes), "within_5_percent": abs(rss["growth"]) <= RSS_GROWTH_ALLOWED},
        "samples": samples,
        "events": events,
        "left_after_all_left": left,
        "viewer_loss": finished,
        "loss_fraction_worst": losses[-1] if losses else None,
        "loss_fraction_median": losses[len(losses) // 2] if losses else None,
    }


def warm_up_seconds(minutes: float) -> float:
    """A sixth of the run, at most 10 minutes: long enough for the allocator's pools and aiortc's
    buffers to fill, short enough to leave most of the run to measure."""
    return min(600.0, minutes * 60 / 6)


def video_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) >= 16 and int(height) >= 16):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 320x180, not {text!r}")
    return int(width), int(height)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    minutes = [s["t"] / 60 for s in samples]
    figure, (rss, fds) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    rss.plot(minutes, [s["rss_mib"] for s in samples])
    warm_up = result["rss"]["warm_up_seconds"] / 60
    rss.axvspan(warm_up, warm_up + 1, color="green", alpha=0.15, label="after warm-up")
    limit = result["rss"]["after_warm_up_mib"] * (1 + RSS_GROWTH_ALLOWED)
    rss.axhline(limit, color="red", linestyle="--", label="+5%")
    rss.set_ylim(top=max(limit, *(s["rss_mib"] for s in samples)) + 1)
    rss.legend(loc="lower right")
    rss.set_ylabel("fanout RSS (MiB)")
    fds.plot(minutes, [s["fds"] for s in samples])
    fds.set_ylabel("open fds")
    fds.set_xlabel("minutes")
    for event in result["events"]:
        if "restart" in event["event"]:
            rss.axvline(event["t"] / 60, color="grey", linestyle=":")
    figure.suptitle(f"fanout soak: {result['viewers']} viewers churning 10%/min, {result['minutes']} min")
    figure.savefig(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fanout bench soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0, help="how long (default 60)")
    parser.add_argument("--viewers", type=int, default=20, help="viewers kept watching (default 20)")
    parser.add_argument("--source-restart-minutes", type=float, default=3.0, help="the source restarts this often (default 3)")
    parser.add_argument("--video-size", type=video_size, default=(320, 180), help="the source's video, WIDTHxHEIGHT (default 320x180)")
    parser.add_argument("--video-bitrate", type=int, default=300_000, help="the source's video bitrate in bit/s (default 300000)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where the JSON and PNG go")
    args = parser.parse_args(argv)
    if args.minutes < 2 or args.viewers < 1:
        parser.error("--minutes must be at least 2 (a warm-up, then a minute to compare) and --viewers at least 1")
    result = asyncio.run(soak(args))
    stem = args.out / f"soak-{time.strftime('%Y-%m-%d')}-{args.minutes:g}min"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(result, stem.with_suffix(".png"))
    print(json.dumps({key: result[key] for key in ("left_after_all_left", "rss", "loss_fraction_worst", "loss_fraction_median")}))
    return 0 if not any(result["left_after_all_left"].values()) and result["rss"]["within_5_percent"] else 1
