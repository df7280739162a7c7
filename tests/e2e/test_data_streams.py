"""Data streams: UDP datagrams sent to a mountpoint's data port reach its viewers as data
channel messages, exactly, in order; text or binary as configured."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.aiortc_viewer import AiortcViewer
from tests.support.janus_client import JanusHttpClient, janus_session
from tests.support.ports import free_ports
from tests.support.server import FanoutProcess, ServerAddresses, write_config

pytestmark = pytest.mark.usefixtures("loopback_only_ice")


def data_mountpoints(text_port: int, binary_port: int) -> str:
    return f"""
text-data: {{
	type = "rtp"
	id = 15
	description = "Datachannel stream from an UDP source"
	audio = false
	video = false
	data = true
	dataport = {text_port}
	datatype = "text"
}}
binary-data: {{
	type = "rtp"
	id = 16
	description = "binary data, latest message kept"
	media = (
		{{ type = "data", mid = "d", port = {binary_port}, datatype = "binary", buffermsg = true }}
	)
}}
"""


@pytest.fixture
def data_server(tmp_path: Path) -> Iterator[tuple[ServerAddresses, int, int]]:
    text_port, binary_port = free_ports(2)
    addresses = write_config(tmp_path / "config", data_mountpoints(text_port, binary_port))
    with FanoutProcess(tmp_path / "config"):
        yield addresses, text_port, binary_port


@pytest.fixture
async def janus(data_server: tuple[ServerAddresses, int, int]) -> AsyncIterator[JanusHttpClient]:
    async with janus_session(data_server[0].janus_url) as client:
        yield client


def send_datagrams(port: int, payloads: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for payload in payloads:
            sender.sendto(payload, ("127.0.0.1", port))


async def wait_for_data_channel(viewer: AiortcViewer) -> None:
    """The server opens its channel with the first message; give the association time to come up."""
    for _ in range(200):
        if viewer.pc.sctp is not None and viewer.pc.sctp.state == "connected":
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the SCTP association never came up")


async def test_text_messages_arrive_exactly_and_in_order(
    janus: JanusHttpClient, data_server: tuple[ServerAddresses, int, int]
) -> None:
    _, text_port, _ = data_server
    viewer = AiortcViewer(janus)
    try:
        await viewer.watch(15)
        await wait_for_data_channel(viewer)
        messages = [f"message {i}: {'é' * (i % 7)}".encode() for i in range(200)]
        big = ("x" * 1000 + "y" * 1000 + "z" * 1000 + "€").encode()  # needs several SCTP DATA chunks
        messages.insert(100, big)
        for start in range(0, len(messages), 20):
            send_datagrams(text_port, messages[start : start + 20])
            await asyncio.sleep(0.01)
        received = await viewer.wait_for_data(len(messages))
        assert received == [message.decode() for message in messages]
        assert [channel.label for channel in viewer.data_channels] == ["JanusDataChannel"]
    finally:
        await viewer.close()


async def test_binary_messages_and_the_latest_message_for_a_late_joiner(
    janus: JanusHttpClient, data_server: tuple[ServerAddresses, int, int]
) -> None:
    _, _, binary_port = data_server
    first, late = AiortcViewer(janus), AiortcViewer(janus)
    try:
        await first.watch(16)
        await wait_for_data_channel(first)
        payloads = [bytes([i]) * (i + 1) + bytes(range(256)) for i in range(50)] + [bytes(range(256)) * 6]
        send_datagrams(binary_port, payloads)
        assert await first.wait_for_data(len(payloads)) == payloads

        await late.watch(16)
        assert await late.wait_for_data(1) == [payloads[-1]]  # at once, before anything new is sent
        send_datagrams(binary_port, [b"\x00after"])
        assert await late.wait_for_data(2) == [payloads[-1], b"\x00after"]
        assert (await first.wait_for_data(len(payloads) + 1))[-1] == b"\x00after"
    finally:
        await first.close()
        await late.close()


async def test_list_and_info_show_the_data_stream(
    janus: JanusHttpClient, data_server: tuple[ServerAddresses, int, int]
) -> None:
    _, text_port, _ = data_server
    handle = await janus.attach()
    listed = await janus.message(handle, {"request": "list"})
    entries = {entry["id"]: entry for entry in listed["plugindata"]["data"]["list"]}
    assert [(m["type"], m["mid"]) for m in entries[15]["media"]] == [("data", "d")]
    assert isinstance(entries[15]["media"][0]["age_ms"], int)
    info = await janus.message(handle, {"request": "info", "id": 15})
    media = info["plugindata"]["data"]["info"]["media"]
    assert [(m["mindex"], m["type"], m["mid"], m["port"]) for m in media] == [(0, "data", "d", text_port)]


async def test_a_viewer_that_vanishes_does_not_disturb_the_others(
    janus: JanusHttpClient, data_server: tuple[ServerAddresses, int, int]
) -> None:
    _, text_port, _ = data_server
    leaving, staying = AiortcViewer(janus), AiortcViewer(janus)
    try:
        await leaving.watch(15)
        await staying.watch(15)
        await wait_for_data_channel(leaving)
        await wait_for_data_channel(staying)
        send_datagrams(text_port, [b"before"])
        await leaving.wait_for_data(1)
        await staying.wait_for_data(1)
        # Vanish without a word: its sockets close, no DTLS close_notify, no SCTP ABORT. The server
        # keeps sending to it (retransmitting, its buffer filling) until ICE consent expires.
        assert leaving.pc.sctp is not None
        connection = leaving.pc.sctp.transport.transport._connection
        for protocol in connection._protocols:
            protocol.transport.close()
        burst = [f"{i:04d}".encode() * 250 for i in range(1500)]  # 1.5 MB: past what a viewer may have unacknowledged
        for start in range(0, len(burst), 30):  # 250 KB/s for 6 s
            send_datagrams(text_port, burst[start : start + 30])
            await asyncio.sleep(0.12)
        try:
            received = await staying.wait_for_data(1 + len(burst), timeout=30)
        finally:
            print("staying viewer got", len(staying.data_messages))
        assert received == ["before"] + [message.decode() for message in burst]
    finally:
        with contextlib.suppress(Exception):
            await leaving.close()
        await staying.close()


async def test_create_over_the_api_in_both_forms(janus: JanusHttpClient) -> None:
    legacy_port, media_port = free_ports(2)
    handle = await janus.attach()
    legacy = await janus.message(
        handle,
        {"request": "create", "type": "rtp", "id": 30, "data": True, "dataport": legacy_port, "datatype": "binary"},
    )
    assert legacy["plugindata"]["data"]["stream"]["data_port"] == legacy_port, legacy
    created = await janus.message(
        handle,
        {
            "request": "create",
            "type": "rtp",
            "id": 31,
            "media": [{"type": "data", "mid": "d", "port": media_port, "datatype": "text", "buffermsg": True}],
        },
    )
    assert created["plugindata"]["data"]["stream"]["ports"] == [{"type": "data", "mid": "d", "port": media_port}]
    refused = await janus.message(
        handle, {"request": "create", "type": "rtp", "id": 32, "data": True, "dataport": 0, "datatype": "xml"}
    )
    assert refused["plugindata"]["data"]["error"] == "Can't add 'rtp' stream: 'datatype' must be 'text' or 'binary', not 'xml'"

    viewer = AiortcViewer(janus)
    try:
        await viewer.watch(30)
        await wait_for_data_channel(viewer)
        send_datagrams(legacy_port, [b"\x01\x02", b"\x03"])
        assert await viewer.wait_for_data(2) == [b"\x01\x02", b"\x03"]
    finally:
        await viewer.close()


async def test_a_client_that_offers_a_data_channel_gets_the_data(
    janus: JanusHttpClient, data_server: tuple[ServerAddresses, int, int]
) -> None:
    _, text_port, _ = data_server
    viewer = AiortcViewer(janus)
    try:
        await viewer.watch_with_offer(15, kinds=(), data_channel="chat")
        await wait_for_data_channel(viewer)
        send_datagrams(text_port, [b"one", b"two"])
        assert await viewer.wait_for_data(2) == ["one", "two"]
        assert sorted(channel.label for channel in viewer.data_channels) == ["JanusDataChannel", "chat"]
    finally:
        await viewer.close()


async def test_configure_turns_the_data_stream_off_and_on(
    janus: JanusHttpClient, data_server: tuple[ServerAddresses, int, int]
) -> None:
    _, text_port, _ = data_server
    viewer = AiortcViewer(janus)
    try:
        await viewer.watch(15)
        await wait_for_data_channel(viewer)
        for body, message in (
            ({"request": "configure", "streams": [{"mid": "d", "send": False}]}, b"not for you"),
            ({"request": "configure", "streams": [{"mid": "d", "send": True}]}, b"for you again"),
            ({"request": "configure", "data": False}, b"legacy off"),
            ({"request": "configure", "data": True}, b"legacy on"),
        ):
            await janus.message(viewer.handle_id, body)
            configured = await viewer.plugin_event()
            assert configured["plugindata"]["data"]["result"] == {"event": "configured"}, configured
            send_datagrams(text_port, [message])
            await asyncio.sleep(0.3)
        assert viewer.data_messages == ["for you again", "legacy on"]
    finally:
        await viewer.close()
