"""The Streaming plugin acts on the engine's events, in process with a real engine:
a simulcast viewer falls back when its substream falls silent and returns when it
sends again, each move announced to the client once the engine made it; an RTSP
pull whose media stops starts again."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest

from fanout._engine import Engine
from fanout.core.plugin import LocalDescription
from fanout.metrics.collector import StateCollector
from fanout.plugins.streaming.adaptation import BEHIND_HOLD_SECONDS, BEHIND_SHARE, UP_HOLD_SECONDS
from fanout.plugins.streaming.config import parse_mountpoint
from fanout.plugins.streaming.mountpoint import Mountpoint, source_index
from fanout.plugins.streaming.plugin import StreamingPlugin
from fanout.webrtc.sdp import SessionDescription
from tests.engine.test_congestion import remb
from tests.engine.test_keyframe_cache import source_pair
from tests.support.rtsp_server import RtspServerProcess

if TYPE_CHECKING:
    from fanout.core.gateway import Gateway
    from fanout.plugins.streaming.viewer import Viewer, ViewerTrack

WAIT_SECONDS = 10.0
FRAME_SECONDS = 0.02
KEYFRAME_EVERY = 5  # frames


@dataclass
class RecordingHandle:
    """A handle whose DTLS is up, recording what the plugin tells its client."""

    id: int
    session_id: int = 1
    opaque_id: str | None = None
    remote_description: SessionDescription | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def push_event(self, transaction: str | None, data: dict[str, Any], jsep: LocalDescription | None = None) -> None:
        self.events.append(data)

    def close_pc(self) -> None:
        pass

    def send_data(self, data: bytes, *, binary: bool) -> bool:
        return False

    async def wait_for(self, result: dict[str, Any], *, after: int) -> None:
        """Until an event with ``result`` comes after the first ``after`` events."""
        await until(lambda: any(event.get("result") == result for event in self.events[after:]), f"no event {result}")


async def until(condition: Callable[[], bool], failure: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.01)


def vp8_packet(sequence: int, *, keyframe: bool, ssrc: int) -> bytes:
    header = struct.pack("!BBHII", 0x80, 0x80 | 96, sequence & 0xFFFF, sequence * 3000, ssrc)
    return header + bytes([0x10, 0x00 if keyframe else 0x01, 0x02, 0x03])


@dataclass
class Encoders:
    """Three simulcast encodings, one frame each per tick, keyframes now and then."""

    ports: list[int]
    sending: list[bool] = field(default_factory=lambda: [True, True, True])
    keyframes: list[bool] = field(default_factory=lambda: [True, True, True])  # False: that encoding makes none
    # Each encoding's own socket (an RTP session per layer, as GStreamer's rtpbin); None: one for all.
    senders: list[socket.socket] | None = None

    async def run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        senders = self.senders or [sock] * len(self.ports)
        try:
            for frame in range(1_000_000):
                for substream, (port, sender) in enumerate(zip(self.ports, senders, strict=True)):
                    if self.sending[substream]:
                        keyframe = self.keyframes[substream] and frame % KEYFRAME_EVERY == 0
                        packet = vp8_packet(frame, keyframe=keyframe, ssrc=substream + 1)
                        sender.sendto(packet, ("127.0.0.1", port))
                await asyncio.sleep(FRAME_SECONDS)  # the source's frame rate
        finally:
            sock.close()


async def send_frames(ports: list[int], packet: Callable[[int, int], bytes]) -> None:
    """Until cancelled, ``packet(frame, index)`` to each of ``ports`` (its index) once per frame."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for frame in itertools.count():
            for index, port in enumerate(ports):
                sock.sendto(packet(frame, index), ("127.0.0.1", port))
            await asyncio.sleep(FRAME_SECONDS)
    finally:
        sock.close()


@dataclass
class Running:
    engine: Engine
    plugin: StreamingPlugin


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    webrtc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    webrtc.bind(("127.0.0.1", 0))
    engine = Engine(webrtc.fileno(), cores=[0], pin=False)
    plugin = StreamingPlugin(engine, [])
    await plugin.start()
    yield Running(engine, plugin)
    await plugin.stop()
    engine.close()
    webrtc.close()


async def watching(running: Running, handle: RecordingHandle, mountpoint: Mountpoint, sink: socket.socket) -> Viewer:
    """What the core does once a viewer's DTLS is up, then its watch of ``mountpoint``, until
    media reaches ``sink``."""
    running.engine.add_peer(handle.id, sink.getsockname(), "AEAD_AES_128_GCM", os.urandom(28), os.urandom(28))
    running.plugin.create_session(handle)
    viewer = running.plugin.viewers[handle.id]
    viewer.watch(mountpoint, None)
    running.plugin.setup_media(handle)
    await until(lambda: running.engine.peer_stats(handle.id).packets > 0, "the viewer got nothing")
    return viewer


def simulcast_mountpoint(plugin: StreamingPlugin) -> Mountpoint:
    group = {"type": "rtp", "id": 4, "video": True, "videoport": 0, "videopt": 96, "videocodec": "vp8",
             "videosimulcast": True, "videoport2": 0, "videoport3": 0}  # fmt: skip
    config, _ = parse_mountpoint("simulcast", group)
    return plugin.add_mountpoint(config)


async def test_a_silent_substream_falls_back_and_each_move_is_announced_once_made(running: Running) -> None:
    plugin = running.plugin
    mountpoint = simulcast_mountpoint(plugin)
    (stream,) = mountpoint.config.streams
    encoders = Encoders(mountpoint.substream_ports[stream.mid])
    sending = asyncio.get_running_loop().create_task(encoders.run())
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        await until(lambda: not any(mountpoint.silence.is_silent(i) for i in mountpoint.silence.indexes), "no media")
        handle = RecordingHandle(11)
        # what the core does when the viewer's DTLS is up
        plugin.engine.add_peer(handle.id, sink.getsockname(), "AEAD_AES_128_GCM", os.urandom(28), os.urandom(28))
        plugin.create_session(handle)
        plugin.viewers[handle.id].watch(mountpoint, None)
        plugin.setup_media(handle)
        assert handle.events[-1]["result"] == {"mid": stream.mid, "substream": 2}

        told = len(handle.events)
        encoders.sending[2] = False
        await handle.wait_for({"mid": stream.mid, "substream": 1}, after=told)
        assert plugin.viewers[handle.id].tracks[0].substream == 1

        told = len(handle.events)
        encoders.sending[2] = True
        await handle.wait_for({"mid": stream.mid, "substream": 2}, after=told)
        moves = [event["result"] for event in handle.events if "substream" in event.get("result", {})]
        assert moves == [{"mid": stream.mid, "substream": substream} for substream in (2, 1, 2)], "each move once"
    finally:
        sending.cancel()
        sink.close()


class SourceMovesRecorded:
    """The engine, with the plugin's set_stream_source calls recorded."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.moves: list[tuple[int, int, int]] = []
        self.at_once: list[bool] = []
        self.probe_goals: list[int | None] = []

    def set_stream_source(self, peer_id: int, index: int, source: int, *, at_once: bool = False) -> None:
        self.moves.append((peer_id, index, source))
        self.at_once.append(at_once)
        self.engine.set_stream_source(peer_id, index, source, at_once=at_once)

    def set_probe_goal(self, peer_id: int, bitrate: int | None) -> None:
        self.probe_goals.append(bitrate)
        self.engine.set_probe_goal(peer_id, bitrate)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


async def test_a_move_asks_for_the_keyframe_again_each_second_until_it_is_made(running: Running) -> None:
    """A browser publishing over WHIP makes a keyframe only when asked, and may pass over a
    request that came too soon after another: the move asks again until it is made."""
    plugin = running.plugin
    recorded = SourceMovesRecorded(running.engine)
    plugin.engine = recorded  # type: ignore[assignment]
    mountpoint = simulcast_mountpoint(plugin)
    (stream,) = mountpoint.config.streams
    encoders = Encoders(mountpoint.substream_ports[stream.mid])
    sending = asyncio.get_running_loop().create_task(encoders.run())
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        await until(lambda: not any(mountpoint.silence.is_silent(i) for i in mountpoint.silence.indexes), "no media")
        handle = RecordingHandle(14)
        viewer = await watching(running, handle, mountpoint, sink)
        lowest = source_index(stream, 0)
        encoders.keyframes[0] = False  # as a publisher that passed over the request

        told = len(handle.events)
        plugin._configure(viewer, "configure", {"request": "configure", "mid": stream.mid, "substream": 0}, None)

        asked_again = (handle.id, lowest, lowest)
        await until(lambda: recorded.moves.count(asked_again) >= 2, "the keyframe was not asked for again")
        assert not any("substream" in event.get("result", {}) for event in handle.events[told:]), "not moved yet"
        encoders.keyframes[0] = True
        await handle.wait_for({"mid": stream.mid, "substream": 0}, after=told)
        assert plugin._moves_pending == {}, "no more requests once moved"
    finally:
        sending.cancel()
        sink.close()


async def test_with_an_rtcp_port_each_substream_asks_its_own_encoder_for_keyframes(running: Running) -> None:
    """Janus's videortcpport on a simulcast mountpoint: an encoder with an RTP session per
    layer (GStreamer's rtpbin) hears RTCP for each layer at that layer's port plus one; a
    move to a substream asks that layer's encoder for a keyframe, naming its SSRC."""
    plugin = running.plugin
    group = {"type": "rtp", "id": 6, "video": True, "videoport": 0, "videopt": 96, "videocodec": "vp8",
             "videortcpport": 0, "videosimulcast": True, "videoport2": 0, "videoport3": 0}  # fmt: skip
    mountpoint = plugin.add_mountpoint(parse_mountpoint("simulcast", group)[0])
    (stream,) = mountpoint.config.streams
    encoders = [source_pair() for _ in range(3)]  # each layer's RTP socket and, a port up, its RTCP socket
    layers = Encoders(mountpoint.substream_ports[stream.mid], senders=[encoder.rtp for encoder in encoders])
    sending = asyncio.get_running_loop().create_task(layers.run())
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        await until(lambda: not any(mountpoint.silence.is_silent(i) for i in mountpoint.silence.indexes), "no media")
        handle = RecordingHandle(16)
        viewer = await watching(running, handle, mountpoint, sink)

        plugin._configure(viewer, "configure", {"request": "configure", "mid": stream.mid, "substream": 1}, None)

        layer = encoders[1].rtcp
        layer.setblocking(False)
        loop = asyncio.get_running_loop()
        request = await asyncio.wait_for(loop.sock_recv(layer, 1500), WAIT_SECONDS)
        assert request[8:10] == bytes([0x81, 206]), "a PLI after the empty receiver report"
        assert struct.unpack("!I", request[16:20])[0] == 2, "about the middle layer's SSRC"
        for other in (encoders[0].rtcp, encoders[2].rtcp):
            other.setblocking(False)
            with pytest.raises(BlockingIOError):
                other.recv(1500)
    finally:
        sending.cancel()
        sink.close()
        for encoder in encoders:
            encoder.close()


async def test_a_substream_that_never_sent_is_left_once_the_fallback_passed_since_joining(running: Running) -> None:
    plugin = running.plugin
    mountpoint = simulcast_mountpoint(plugin)
    (stream,) = mountpoint.config.streams
    encoders = Encoders(mountpoint.substream_ports[stream.mid], sending=[True, True, False])
    sending = asyncio.get_running_loop().create_task(encoders.run())
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        await until(lambda: not mountpoint.silence.is_silent(source_index(stream, 1)), "no media")
        handle = RecordingHandle(12)
        # what the core does when the viewer's DTLS is up
        plugin.engine.add_peer(handle.id, sink.getsockname(), "AEAD_AES_128_GCM", os.urandom(28), os.urandom(28))
        plugin.create_session(handle)
        plugin.viewers[handle.id].watch(mountpoint, None)
        joined = time.monotonic()
        plugin.setup_media(handle)
        assert handle.events[-1]["result"] == {"mid": stream.mid, "substream": 2}, "the highest, as Janus"
        await handle.wait_for({"mid": stream.mid, "substream": 1}, after=len(handle.events))
        assert time.monotonic() - joined >= 0.25, "not before its fallback (250 ms) passed"
    finally:
        sending.cancel()
        sink.close()


async def test_an_rtsp_source_whose_media_stops_is_pulled_again(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = running.plugin
    with RtspServerProcess("vp8") as camera:
        group = {"type": "rtsp", "id": 8, "video": True, "url": camera.url, "rtsp_reconnect_delay": 1, "rtsp_timeout": 1}
        config, _ = parse_mountpoint("camera", group)
        mountpoint = await plugin.open_rtsp_mountpoint(config)
        await until(lambda: not mountpoint.silence.all_silent(), "no media from the camera")
        assert camera.process is not None
        with caplog.at_level(logging.WARNING, logger="fanout.plugins.streaming.rtsp_source"):
            camera.process.send_signal(signal.SIGSTOP)  # frozen: its connection stays open, its media stops
            try:
                await until(lambda: "no media from the RTSP server" in caplog.text, "the stall went unnoticed")
            finally:
                camera.process.send_signal(signal.SIGCONT)
        await until(lambda: not mountpoint.silence.all_silent(), "no media after the new PLAY")


async def test_the_substream_follows_the_estimate_down_at_once_up_slowly_and_configure_pins_it(
    running: Running,
) -> None:
    from pylibsrtp import Policy, Session

    plugin = running.plugin
    recorded = SourceMovesRecorded(running.engine)
    plugin.engine = recorded  # type: ignore[assignment]
    mountpoint = simulcast_mountpoint(plugin)
    (stream,) = mountpoint.config.streams
    ports = mountpoint.substream_ports[stream.mid]
    # About 60, 200 and 500 kbit/s: payloads of 150, 500 and 1250 bytes at 50 frames a second.
    sizes = [150, 500, 1250]

    def packet(frame: int, substream: int) -> bytes:
        return vp8_packet(frame, keyframe=frame % KEYFRAME_EVERY == 0, ssrc=substream + 1) + bytes(sizes[substream])

    sending = asyncio.get_running_loop().create_task(send_frames(ports, packet))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    viewer_key = os.urandom(28)
    outbound = Session(Policy(key=viewer_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM))  # fmt: skip
    bitrate = {"now": 10_000_000}

    async def report() -> None:
        while True:  # as Chromium: a REMB about every 200 ms
            plugin.engine.receive_rtcp(handle.id, outbound.protect_rtcp(remb(bitrate["now"], track.ssrc)))
            await asyncio.sleep(0.2)

    try:
        await until(lambda: not any(mountpoint.silence.is_silent(i) for i in mountpoint.silence.indexes), "no media")
        handle = RecordingHandle(13)
        plugin.engine.add_peer(handle.id, sink.getsockname(), "AEAD_AES_128_GCM", os.urandom(28), viewer_key)
        plugin.create_session(handle)
        plugin.viewers[handle.id].watch(mountpoint, None)
        plugin.setup_media(handle)
        (track,) = plugin.viewers[handle.id].tracks
        assert track.adaptive, "on by default for simulcast"
        plugin.viewers[handle.id].transport_cc_id = 3  # as if negotiated: the plugin sets probe goals
        reporting = asyncio.get_running_loop().create_task(report())
        try:
            await until(lambda: plugin.viewers[handle.id].estimate == 10_000_000, "no estimate")
            assert track.substream == 2

            told = len(handle.events)
            bitrate["now"] = 100_000  # fits only substream 0
            await handle.wait_for({"mid": stream.mid, "substream": 0}, after=told)
            assert recorded.at_once[-1], "down: at once, from the keyframe cache"
            goal = recorded.probe_goals[-1]
            rates = mountpoint.layer_rates.layer_bitrates([source_index(stream, substream) for substream in range(3)])
            assert goal is not None and rates[1] < goal < rates[2], "probe for substream 1, with headroom"

            told = len(handle.events)
            bitrate["now"] = 300_000  # substream 1 with its headroom, not 2
            await handle.wait_for({"mid": stream.mid, "substream": 1}, after=told)
            raised_at = time.monotonic()
            bitrate["now"] = 10_000_000
            await handle.wait_for({"mid": stream.mid, "substream": 2}, after=told)
            assert time.monotonic() - raised_at >= 2.0, "up only once the estimate held"
            assert not recorded.at_once[-1], "up: at the higher substream's keyframe"
            assert recorded.probe_goals[-1] is None, "nothing to probe for at the top"

            told = len(handle.events)
            await plugin.handle_message(handle, "t", {"request": "configure", "substream": 1}, None)  # type: ignore[arg-type]
            await handle.wait_for({"mid": stream.mid, "substream": 1}, after=told)
            assert not track.adaptive, "configure with a substream pins it"
            bitrate["now"] = 100_000
            await until(lambda: plugin.viewers[handle.id].estimate == 100_000, "no new estimate")
            assert track.requested_substream == 1, "pinned: the estimate does not move it"
            info = plugin.query_session(handle)  # type: ignore[arg-type]
            assert info["estimate"] == 100_000
            assert info["layers"] == {stream.mid: {"substream": 1, "temporal": None, "adaptive": False}}
            assert info["layer_moves"] == {"up": 2, "down": 1}, "the estimate's moves; configure's are not"
            metrics = {
                metric.name: {(sample.name, tuple(sample.labels.items())): sample.value for sample in metric.samples}
                for metric in StateCollector(cast("Gateway", SimpleNamespace(plugins={"s": plugin})))._adaptation()
            }
            estimates = metrics["fanout_viewer_estimate_bits"]
            assert estimates[("fanout_viewer_estimate_bits_bucket", (("le", "150000"),))] == 1
            assert estimates[("fanout_viewer_estimate_bits_gcount", ())] == 1
            substreams = metrics["fanout_viewer_substream"]
            assert substreams[("fanout_viewer_substream_bucket", (("le", "0"),))] == 0
            assert substreams[("fanout_viewer_substream_bucket", (("le", "1"),))] == 1
            assert metrics["fanout_layer_moves"][("fanout_layer_moves_total", (("direction", "up"),))] == 2
        finally:
            reporting.cancel()
    finally:
        sending.cancel()
        sink.close()


async def test_a_viewer_whose_estimate_stays_under_the_only_layer_is_reported_until_it_recovers(
    running: Running,
) -> None:
    from pylibsrtp import Policy, Session

    plugin = running.plugin
    group = {"type": "rtp", "id": 5, "video": True, "videoport": 0, "videopt": 96, "videocodec": "vp8"}
    config, _ = parse_mountpoint("single", group)
    mountpoint = plugin.add_mountpoint(config)
    (stream,) = mountpoint.config.streams
    (port,) = mountpoint.ports

    def packet(frame: int, _: int) -> bytes:  # about 400 kbit/s: 1000-byte payloads at 50 frames a second
        return vp8_packet(frame, keyframe=frame % KEYFRAME_EVERY == 0, ssrc=1) + bytes(1000)

    sending = asyncio.get_running_loop().create_task(send_frames([port], packet))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    viewer_key = os.urandom(28)
    outbound = Session(Policy(key=viewer_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM))  # fmt: skip
    bitrate = {"now": 10_000_000}
    handle = RecordingHandle(17)

    async def report() -> None:
        while True:  # as Chromium without transport-cc: a REMB about every 200 ms, through the core
            packet = outbound.protect_rtcp(remb(bitrate["now"], track.ssrc))
            plugin.incoming_rtcp(handle, plugin.engine.receive_rtcp(handle.id, packet))  # type: ignore[arg-type]
            await asyncio.sleep(0.2)

    def keeping_up_events() -> list[dict[str, Any]]:
        return [event["result"] for event in handle.events if "keeping_up" in event.get("result", {})]

    def viewers_behind() -> float:
        collector = StateCollector(cast("Gateway", SimpleNamespace(plugins={"s": plugin})))
        (gauge,) = [metric for metric in collector._adaptation() if metric.name == "fanout_viewers_behind"]
        return gauge.samples[0].value

    async def until_late(condition: Callable[[], bool], failure: str) -> None:
        deadline = time.monotonic() + 4 * WAIT_SECONDS  # the bitrate is measured, then the estimate must hold
        while not condition():
            assert time.monotonic() < deadline, failure
            await asyncio.sleep(0.05)

    try:
        await until(lambda: not mountpoint.silence.all_silent(), "no media")
        plugin.engine.add_peer(handle.id, sink.getsockname(), "AEAD_AES_128_GCM", os.urandom(28), viewer_key)
        plugin.create_session(handle)
        plugin.viewers[handle.id].watch(mountpoint, None)
        plugin.setup_media(handle)
        (track,) = plugin.viewers[handle.id].tracks
        assert plugin.query_session(handle)["keeping_up"] is None, "nothing measures its rate yet"  # type: ignore[arg-type]
        reporting = asyncio.get_running_loop().create_task(report())
        try:
            await until(lambda: plugin.viewers[handle.id].estimate == 10_000_000, "no estimate")
            await until_late(lambda: mountpoint.layer_rates.bitrates.get(track.source_index) is not None, "no bitrate")
            assert plugin.query_session(handle)["keeping_up"] is True  # type: ignore[arg-type]

            bitrate["now"] = 100_000
            lowered_at = time.monotonic()
            await until_late(lambda: len(keeping_up_events()) == 1, "not reported behind")
            assert time.monotonic() - lowered_at >= BEHIND_HOLD_SECONDS, "only once the estimate held under"
            (behind,) = keeping_up_events()
            assert behind["keeping_up"] is False and behind["estimate"] == 100_000
            assert behind["bitrate"] * BEHIND_SHARE > 100_000, "the source's measured bitrate"
            assert plugin.query_session(handle)["keeping_up"] is False  # type: ignore[arg-type]
            assert viewers_behind() == 1

            bitrate["now"] = 10_000_000
            await until_late(lambda: len(keeping_up_events()) == 2, "not reported keeping up again")
            assert keeping_up_events()[1]["keeping_up"] is True
            assert plugin.query_session(handle)["keeping_up"] is True  # type: ignore[arg-type]
            assert viewers_behind() == 0
        finally:
            reporting.cancel()
    finally:
        sending.cancel()
        sink.close()


TEMPORAL_PATTERN = (0, 2, 1, 2)  # each frame's temporal layer, repeating (libvpx's three-layer mode)


def layered_vp8_packet(frame: int, *, ssrc: int, size: int) -> bytes:
    """One frame of a VP8 stream in three temporal layers, a keyframe every 8 frames (on layer
    0): the payload descriptor has X, then T with the frame's TID."""
    header = struct.pack("!BBHII", 0x80, 0x80 | 96, frame & 0xFFFF, frame * 3000, ssrc)
    descriptor = bytes([0x90, 0x20, TEMPORAL_PATTERN[frame % 4] << 6])
    return header + descriptor + bytes([0x00 if frame % 8 == 0 else 0x01]) + bytes(size)


def temporal_layer_of(rtp: bytes) -> int:
    """The TID of a packet ``layered_vp8_packet`` made, as a viewer got it (after the header
    and any extensions fanout added)."""
    offset = 12 + 4 * (rtp[0] & 0x0F)
    if rtp[0] & 0x10:
        offset += 4 + 4 * struct.unpack_from("!H", rtp, offset + 2)[0]
    return rtp[offset + 2] >> 6


async def test_below_the_lowest_substream_temporal_layers_are_left_out_and_come_back_one_at_a_time(
    running: Running,
) -> None:
    from pylibsrtp import Error as SrtpError
    from pylibsrtp import Policy, Session

    plugin = running.plugin
    mountpoint = simulcast_mountpoint(plugin)
    (stream,) = mountpoint.config.streams
    ports = mountpoint.substream_ports[stream.mid]
    # About 400, 450 and 490 kbit/s; substream 0's base layer alone about 100 kbit/s, with layer 1 200.
    sizes = [1000, 1100, 1200]

    def packet(frame: int, substream: int) -> bytes:
        return layered_vp8_packet(frame, ssrc=substream + 1, size=sizes[substream])

    sending = asyncio.get_running_loop().create_task(send_frames(ports, packet))
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    fanout_key, viewer_key = os.urandom(28), os.urandom(28)
    gcm = Policy.SRTP_PROFILE_AEAD_AES_128_GCM
    outbound = Session(Policy(key=viewer_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=gcm))
    inbound = Session(Policy(key=fanout_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=gcm))
    received_layers: list[int] = []
    bitrate = {"now": 10_000_000}
    handle = RecordingHandle(19)

    def read_sink() -> None:
        while True:
            try:
                datagram = sink.recv(2048)
            except BlockingIOError:
                return
            if datagram[1] & 0x7F != 96:  # sender reports
                continue
            try:
                received_layers.append(temporal_layer_of(inbound.unprotect(datagram)))
            except SrtpError:
                continue

    def layers_lately() -> set[int]:
        """The temporal layers of the last 8 video packets the viewer got."""
        read_sink()
        return set(received_layers[-8:]) if len(received_layers) >= 8 else set()

    async def report() -> None:
        while True:  # REMB through the core, as for the viewer that cannot keep up
            packet = outbound.protect_rtcp(remb(bitrate["now"], track.ssrc))
            plugin.incoming_rtcp(handle, plugin.engine.receive_rtcp(handle.id, packet))  # type: ignore[arg-type]
            await asyncio.sleep(0.2)

    async def until_late(condition: Callable[[], bool], failure: str) -> None:
        deadline = time.monotonic() + 4 * WAIT_SECONDS
        while not condition():
            assert time.monotonic() < deadline, failure
            await asyncio.sleep(0.05)

    def told(result: dict[str, Any], after: int) -> bool:
        return any(event.get("result") == result for event in handle.events[after:])

    try:
        await until(lambda: not any(mountpoint.silence.is_silent(i) for i in mountpoint.silence.indexes), "no media")
        plugin.engine.add_peer(handle.id, sink.getsockname(), "AEAD_AES_128_GCM", fanout_key, viewer_key)
        plugin.create_session(handle)
        plugin.viewers[handle.id].watch(mountpoint, None)
        plugin.setup_media(handle)
        (track,) = plugin.viewers[handle.id].tracks
        reporting = asyncio.get_running_loop().create_task(report())
        lowest = source_index(stream, 0)
        try:
            await until(lambda: plugin.viewers[handle.id].estimate == 10_000_000, "no estimate")
            await until_late(lambda: len(mountpoint.layer_rates.temporal_bitrates(lowest)) == 3, "layers not measured")
            assert track.substream == 2 and track.temporal is None

            before = len(handle.events)
            bitrate["now"] = 150_000  # under substream 0 whole; its base layer fits
            await until_late(lambda: told({"mid": stream.mid, "substream": 0}, before), "not moved to substream 0")
            await until_late(lambda: told({"mid": stream.mid, "temporal": 0}, before), "temporal layers kept")
            await until_late(lambda: layers_lately() == {0}, "the viewer still gets layers above 0")

            before = len(handle.events)
            bitrate["now"] = 300_000  # layers 0 and 1 with headroom, not 2
            raised_at = time.monotonic()
            await until_late(lambda: told({"mid": stream.mid, "temporal": 1}, before), "layer 1 did not come back")
            assert time.monotonic() - raised_at >= UP_HOLD_SECONDS, "up only once the estimate held"
            await until_late(lambda: layers_lately() == {0, 1}, "the viewer does not get layers 0 and 1")
            assert track.substream == 0
            assert plugin.query_session(handle)["layers"][stream.mid]["temporal"] == 1  # type: ignore[arg-type]

            before = len(handle.events)
            await plugin.handle_message(handle, "t", {"request": "configure", "substream": 0}, None)  # type: ignore[arg-type]
            await until(lambda: told({"mid": stream.mid, "temporal": 2}, before), "automatic choice off: layers not back")
            assert track.temporal is None and not track.adaptive

            before = len(handle.events)
            await plugin.handle_message(handle, "t", {"request": "configure", "adaptive": True}, None)  # type: ignore[arg-type]
            await until_late(lambda: told({"mid": stream.mid, "temporal": 1}, before), "automatic choice not on again")

            before = len(handle.events)
            await plugin.handle_message(handle, "t", {"request": "configure", "temporal": 0}, None)  # type: ignore[arg-type]
            await until(lambda: told({"mid": stream.mid, "temporal": 0}, before), "configure's layer not taken")
            pinned_at = time.monotonic()
            await until_late(lambda: time.monotonic() - pinned_at > UP_HOLD_SECONDS + 1, "")
            assert plugin.viewers[handle.id].estimate == 300_000
            assert track.temporal == 0, "pinned: the estimate does not move it"
        finally:
            reporting.cancel()
    finally:
        sending.cancel()
        sink.close()


def layered_vp9_packet(frame: int, *, size: int) -> bytes:
    """One frame of a VP9 stream in three temporal layers, a keyframe every 8 frames: the
    payload descriptor (RFC 9628) has I (15 bits), P but on keyframes, L, B, E; TID, U on
    base-layer pictures; TL0PICIDX."""
    layer = TEMPORAL_PATTERN[frame % 4]
    header = struct.pack("!BBHII", 0x80, 0x80 | 96, frame & 0xFFFF, frame * 3000, 0x99)
    first = 0xAC | (0 if frame % 8 == 0 else 0x40)
    descriptor = bytes([first, 0x80 | (frame >> 8) & 0x7F, frame & 0xFF, layer << 5 | (0x10 if layer == 0 else 0),
                        (frame // 4) & 0xFF])  # fmt: skip
    return header + descriptor + bytes(size)


def layered_av1_packet(frame: int, *, size: int) -> bytes:
    """One frame of an AV1 stream in three temporal layers, in one packet, a keyframe every 8
    frames (the AV1 RTP specification: the aggregation header's W = 1 and N on a keyframe; a
    frame OBU whose extension header names its temporal layer)."""
    layer = TEMPORAL_PATTERN[frame % 4]
    header = struct.pack("!BBHII", 0x80, 0x80 | 96, frame & 0xFFFF, frame * 3000, 0x98)
    return header + bytes([0x18 if frame % 8 == 0 else 0x10, 6 << 3 | 0x04, layer << 5]) + bytes(size)


class LayeredViewer:
    """A viewer of a layered (VP9 or AV1) mountpoint for the layer tests: its socket and SRTP
    sessions; it reads the byte that names the layers of each video packet it gets (at
    ``layer_byte`` in the payload: VP9's layer indices, RFC 9628: TID, U, SID, D; AV1's OBU
    extension header: temporal_id, spatial_id) and sends a REMB of ``bitrate`` every 200 ms, as
    Chromium does."""

    def __init__(self, plugin: StreamingPlugin, handle: RecordingHandle, layer_byte: int = 3) -> None:
        from pylibsrtp import Policy, Session

        self.plugin, self.handle, self.layer_byte = plugin, handle, layer_byte
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        self.sink.setblocking(False)
        self.fanout_key, self.viewer_key = os.urandom(28), os.urandom(28)
        gcm = Policy.SRTP_PROFILE_AEAD_AES_128_GCM
        self.outbound = Session(Policy(key=self.viewer_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=gcm))
        self.inbound = Session(Policy(key=self.fanout_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=gcm))
        self.layer_bytes: list[int] = []
        self.bitrate = 10_000_000

    def watch(self, mountpoint: Mountpoint) -> ViewerTrack:
        """What the core and the plugin do when the viewer's DTLS is up; its one track."""
        self.plugin.engine.add_peer(self.handle.id, self.sink.getsockname(), "AEAD_AES_128_GCM", self.fanout_key,
                                    self.viewer_key)  # fmt: skip
        self.plugin.create_session(self.handle)  # type: ignore[arg-type]
        self.plugin.viewers[self.handle.id].watch(mountpoint, None)
        self.plugin.setup_media(self.handle)  # type: ignore[arg-type]
        (track,) = self.plugin.viewers[self.handle.id].tracks
        return track

    def layers_lately(self, layer: Callable[[int], int]) -> set[int]:
        """``layer`` of the layer bytes of the last 8 video packets the viewer got."""
        from pylibsrtp import Error as SrtpError

        while True:
            try:
                datagram = self.sink.recv(2048)
            except BlockingIOError:
                break
            if datagram[1] & 0x7F != 96:  # sender reports
                continue
            try:
                rtp = self.inbound.unprotect(datagram)
            except SrtpError:
                continue
            offset = 12 + (4 + 4 * struct.unpack_from("!H", rtp, 14)[0] if rtp[0] & 0x10 else 0)
            self.layer_bytes.append(rtp[offset + self.layer_byte])
        lately = self.layer_bytes[-8:]
        return {layer(indices) for indices in lately} if len(lately) == 8 else set()

    async def report(self, ssrc: int) -> None:
        while True:
            packet = self.outbound.protect_rtcp(remb(self.bitrate, ssrc))
            self.plugin.incoming_rtcp(self.handle, self.plugin.engine.receive_rtcp(self.handle.id, packet))  # type: ignore[arg-type]
            await asyncio.sleep(0.2)

    def told(self, result: dict[str, Any], after: int) -> bool:
        return any(event.get("result") == result for event in self.handle.events[after:])


def temporal_layer_in(layer_byte: int) -> int:
    """VP9's TID in its layer indices, AV1's temporal_id in an OBU extension header: the top 3 bits."""
    return layer_byte >> 5


def vp9_spatial_layer(indices: int) -> int:
    return indices >> 1 & 0x07


async def until_late(condition: Callable[[], bool], failure: str) -> None:
    """As ``until``, for what waits on layer rates measured over seconds and a hold of seconds."""
    deadline = time.monotonic() + 4 * WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("codec", ["vp9", "av1"])
async def test_vp9_and_av1_temporal_layers_follow_the_estimate_and_configure_pins_one(
    running: Running, codec: str
) -> None:
    plugin = running.plugin
    group = {"type": "rtp", "id": 6, "video": True, "videoport": 0, "videopt": 96, "videocodec": codec}
    config, _ = parse_mountpoint(codec, group)
    mountpoint = plugin.add_mountpoint(config)
    (stream,) = mountpoint.config.streams
    # About 400 kbit/s whole at 50 frames a second: layer 0 alone about 100 kbit/s, with layer 1 200.
    packet = layered_vp9_packet if codec == "vp9" else layered_av1_packet
    sending = asyncio.get_running_loop().create_task(
        send_frames(mountpoint.ports[:1], lambda frame, _: packet(frame, size=1000))
    )
    handle = RecordingHandle(21)
    # The byte that names the layers: VP9's layer indices, AV1's OBU extension header (both: TID << 5).
    viewer = LayeredViewer(plugin, handle, layer_byte=3 if codec == "vp9" else 2)

    def layers_lately() -> set[int]:
        return viewer.layers_lately(temporal_layer_in)

    try:
        await until(lambda: not any(mountpoint.silence.is_silent(i) for i in mountpoint.silence.indexes), "no media")
        track = viewer.watch(mountpoint)
        reporting = asyncio.get_running_loop().create_task(viewer.report(track.ssrc))
        try:
            await until(lambda: plugin.viewers[handle.id].estimate == 10_000_000, "no estimate")
            rates = mountpoint.layer_rates
            await until_late(lambda: len(rates.temporal_bitrates(track.source_index)) == 3, "layers not measured")
            await until_late(lambda: layers_lately() == {0, 1, 2}, "the viewer does not get every layer")

            before = len(handle.events)
            viewer.bitrate = 150_000  # layer 0 fits, not layer 1
            await until_late(lambda: viewer.told({"mid": stream.mid, "temporal_layer": 0}, before), "temporal layers kept")
            viewer.layer_bytes.clear()
            await until_late(lambda: layers_lately() == {0}, "the viewer still gets layers above 0")

            before = len(handle.events)
            await plugin.handle_message(handle, "t", {"request": "configure", "adaptive": False}, None)  # type: ignore[arg-type]
            await until(lambda: viewer.told({"mid": stream.mid, "temporal_layer": 2}, before), "automatic choice off: layers not back")
            viewer.layer_bytes.clear()
            await until_late(lambda: layers_lately() == {0, 1, 2}, "the viewer does not get every layer again")
            assert track.temporal is None and track.temporal_pinned

            before = len(handle.events)
            await plugin.handle_message(handle, "t", {"request": "configure", "temporal_layer": 1}, None)  # type: ignore[arg-type]
            await until(lambda: viewer.told({"mid": stream.mid, "temporal_layer": 1}, before), "configure's layer not taken")
            viewer.layer_bytes.clear()
            await until_late(lambda: layers_lately() == {0, 1}, "the viewer does not get layers 0 and 1")
            assert track.temporal == 1 and track.temporal_pinned

            if codec == "vp9":
                before = len(handle.events)
                await plugin.handle_message(handle, "t", {"request": "configure", "spatial_layer": 0}, None)  # type: ignore[arg-type]
                await until(lambda: viewer.told({"mid": stream.mid, "spatial_layer": 0}, before), "configure's spatial layer")
                viewer.layer_bytes.clear()
                await until_late(lambda: layers_lately() == {0, 1}, "the base spatial layer (the only one) still comes")
                assert track.spatial == 0
        finally:
            reporting.cancel()
    finally:
        sending.cancel()
        viewer.sink.close()


def spatial_vp9_packet(frame: int, spatial_layer: int, *, sizes: tuple[int, int]) -> bytes:
    """Spatial layer 0 or 1 of one picture of a VP9 stream in two spatial layers (the upper one
    predicted from the lower and its own earlier frames; a keyframe every 8 pictures): I (15
    bits), P but in keyframes, L, B, E; SID, D on the upper layer; TL0PICIDX. The upper layer
    ends the picture (marker)."""
    keyframe = frame % 8 == 0
    marker = 0x80 if spatial_layer == 1 else 0
    header = struct.pack("!BBHII", 0x80, marker | 96, (2 * frame + spatial_layer) & 0xFFFF, frame * 3000, 0x98)
    first = 0xAC | (0 if keyframe else 0x40)
    indices = spatial_layer << 1 | spatial_layer  # SID; D: the upper layer depends on the lower
    descriptor = bytes([first, 0x80 | (frame >> 8) & 0x7F, frame & 0xFF, indices, frame & 0xFF])
    return header + descriptor + bytes(sizes[spatial_layer])


async def test_vp9_spatial_layers_follow_the_estimate_configure_pins_one_and_the_pin_stays_across_a_switch(
    running: Running,
) -> None:
    plugin = running.plugin
    group = {"type": "rtp", "id": 7, "video": True, "videoport": 0, "videopt": 96, "videocodec": "vp9"}
    config, _ = parse_mountpoint("vp9-svc", group)
    mountpoint = plugin.add_mountpoint(config)
    (stream,) = mountpoint.config.streams
    # At 50 pictures a second: the base layer about 130 kbit/s, with the upper one about 620.
    port = mountpoint.ports[0]
    sending = asyncio.get_running_loop().create_task(
        send_frames([port, port], lambda frame, layer: spatial_vp9_packet(frame, layer, sizes=(300, 1200)))
    )
    handle = RecordingHandle(22)
    viewer = LayeredViewer(plugin, handle)

    def layers_lately() -> set[int]:
        return viewer.layers_lately(vp9_spatial_layer)

    try:
        await until(lambda: not any(mountpoint.silence.is_silent(i) for i in mountpoint.silence.indexes), "no media")
        track = viewer.watch(mountpoint)
        reporting = asyncio.get_running_loop().create_task(viewer.report(track.ssrc))
        try:
            rates = mountpoint.layer_rates
            await until_late(lambda: len(rates.spatial_bitrates(track.source_index)) == 2, "layers not measured")
            await until_late(lambda: layers_lately() == {0, 1}, "the viewer does not get both layers")

            before = len(handle.events)
            viewer.bitrate = 300_000  # the base layer fits, not both
            await until_late(lambda: viewer.told({"mid": stream.mid, "spatial_layer": 0}, before), "spatial layers kept")
            viewer.layer_bytes.clear()
            await until_late(lambda: layers_lately() == {0}, "the viewer still gets the upper layer")
            assert track.spatial == 0 and not track.spatial_pinned

            before = len(handle.events)
            viewer.bitrate = 10_000_000
            await until_late(lambda: viewer.told({"mid": stream.mid, "spatial_layer": 1}, before), "not back up")
            viewer.layer_bytes.clear()
            await until_late(lambda: layers_lately() == {0, 1}, "the upper layer does not come back")
            assert track.spatial is None

            before = len(handle.events)
            await plugin.handle_message(handle, "t", {"request": "configure", "spatial_layer": 0}, None)  # type: ignore[arg-type]
            await until(lambda: viewer.told({"mid": stream.mid, "spatial_layer": 0}, before), "configure's spatial layer")
            assert track.spatial == 0 and track.spatial_pinned
            # Read what came before the pin, so that what is read after the switch came after it.
            viewer.layer_bytes.clear()
            await until_late(lambda: layers_lately() == {0}, "the pin does not leave the upper layer out")
            viewer.bitrate = 20_000_000
            await until_late(lambda: plugin.viewers[handle.id].estimate == 20_000_000, "no new estimate")
            pinned_at = time.monotonic()
            await until_late(lambda: time.monotonic() - pinned_at > UP_HOLD_SECONDS + 1, "")
            assert track.spatial == 0, "pinned: the estimate does not move it"

            # Switched to another VP9 mountpoint, the viewer keeps its pinned layer there.
            other_group = {"type": "rtp", "id": 9, "video": True, "videoport": 0, "videopt": 96, "videocodec": "vp9"}
            other = plugin.add_mountpoint(parse_mountpoint("vp9-svc-2", other_group)[0])
            sending.cancel()
            other_port = other.ports[0]
            sending = asyncio.get_running_loop().create_task(
                send_frames([other_port, other_port], lambda frame, layer: spatial_vp9_packet(frame, layer, sizes=(300, 1200)))
            )
            await until(lambda: not any(other.silence.is_silent(i) for i in other.silence.indexes), "no media")
            before = len(handle.events)
            await plugin.handle_message(handle, "t", {"request": "switch", "id": 9}, None)  # type: ignore[arg-type]
            await until(lambda: viewer.told({"switched": "ok", "id": 9}, before), "not switched")
            (switched,) = plugin.viewers[handle.id].tracks
            assert switched.spatial == 0 and switched.spatial_pinned
            viewer.layer_bytes.clear()
            await until_late(lambda: bool(layers_lately()) and len(viewer.layer_bytes) >= 40, "no media after the switch")
            assert set(map(vp9_spatial_layer, viewer.layer_bytes)) == {0}, "the pinned layer left behind at the switch"
        finally:
            reporting.cancel()
    finally:
        sending.cancel()
        viewer.sink.close()
