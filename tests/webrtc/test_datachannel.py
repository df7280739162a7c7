"""Data channels and DCEP over a pair of associations, sans-IO."""

from __future__ import annotations

import pytest

from fanout.webrtc.datachannel import (
    DATA_CHANNEL_ACK,
    PPID_BINARY,
    PPID_BINARY_EMPTY,
    PPID_DCEP,
    PPID_STRING,
    PPID_STRING_EMPTY,
    ChannelMessage,
    ChannelOpened,
    DataChannelOpenMessage,
    DataChannels,
    DcepError,
)
from fanout.webrtc.sctp import MessageReceived, SctpUsageError
from tests.webrtc.sctp_pair import Pair, established


class ChannelPair:
    """fanout as the DTLS server (odd streams) and a browser as the DTLS client (even streams)."""

    def __init__(self) -> None:
        self.pair = established()
        self.server = DataChannels(self.pair.server, is_dtls_client=False)
        self.browser = DataChannels(self.pair.client, is_dtls_client=True)
        self.raw_to_browser: list[MessageReceived] = []

    def pump(self) -> None:
        pair: Pair = self.pair
        for _ in range(10):
            pair.pump()
            server_events = pair.server.drain_events()
            browser_events = pair.client.drain_events()
            for event in server_events:
                assert isinstance(event, MessageReceived)
                self.server.receive(event, pair.now)
            for event in browser_events:
                assert isinstance(event, MessageReceived)
                self.raw_to_browser.append(event)
                self.browser.receive(event, pair.now)
            if not server_events and not browser_events:
                return


def test_open_message_round_trips() -> None:
    message = DataChannelOpenMessage(label="JanusDataChannel", protocol="chat")
    data = bytes(message)
    assert data[0] == 0x03 and data[1] == 0x00  # DATA_CHANNEL_OPEN, reliable and ordered
    assert DataChannelOpenMessage.parse(data) == message
    with pytest.raises(DcepError):
        DataChannelOpenMessage.parse(data[:14])
    with pytest.raises(DcepError):
        DataChannelOpenMessage.parse(bytes([DATA_CHANNEL_ACK]))


def test_the_server_opens_a_channel_and_sends_text_and_binary() -> None:
    channels = ChannelPair()
    channel = channels.server.open("JanusDataChannel", channels.pair.now)
    assert channel.stream_id == 1 and channel.state == "connecting"
    channels.server.send(channel, "héllo", channels.pair.now)  # before the ACK: ordered, so after the OPEN
    channels.server.send(channel, b"\x00\x01binary", channels.pair.now)
    channels.server.send(channel, "", channels.pair.now)
    channels.server.send(channel, b"", channels.pair.now)
    channels.pump()
    assert [(m.stream_id, m.ppid) for m in channels.raw_to_browser] == [
        (1, PPID_DCEP),
        (1, PPID_STRING),
        (1, PPID_BINARY),
        (1, PPID_STRING_EMPTY),
        (1, PPID_BINARY_EMPTY),
    ]
    [opened, *received] = channels.browser.drain_events()
    assert isinstance(opened, ChannelOpened) and opened.channel.label == "JanusDataChannel"
    assert opened.channel.opened_by_peer
    assert received == [
        ChannelMessage(1, "JanusDataChannel", "héllo"),
        ChannelMessage(1, "JanusDataChannel", b"\x00\x01binary"),
        ChannelMessage(1, "JanusDataChannel", ""),
        ChannelMessage(1, "JanusDataChannel", b""),
    ]
    assert channels.server.drain_events() == [ChannelOpened(channel)]  # the browser's ACK
    assert channel.state == "open"


def test_a_channel_the_peer_opens_is_acknowledged_and_found_by_label() -> None:
    channels = ChannelPair()
    theirs = channels.browser.open("JanusDataChannel", channels.pair.now)
    assert theirs.stream_id == 0
    channels.pump()
    [opened] = channels.server.drain_events()
    assert isinstance(opened, ChannelOpened) and opened.channel.stream_id == 0
    found = channels.server.channel("JanusDataChannel")
    assert found is opened.channel
    channels.server.send(found, "on your channel", channels.pair.now)
    channels.pump()
    assert channels.browser.drain_events() == [
        ChannelOpened(theirs),
        ChannelMessage(0, "JanusDataChannel", "on your channel"),
    ]
    ours = channels.server.open("another", channels.pair.now)
    assert ours.stream_id == 1  # the DTLS server's streams are odd


def test_messages_on_no_channel_and_unknown_dcep_are_dropped() -> None:
    channels = ChannelPair()
    channels.pair.client.send(4, PPID_STRING, b"nobody opened stream 4", channels.pair.now)
    channels.pair.client.send(6, PPID_DCEP, b"\x99garbage", channels.pair.now)
    channels.pump()
    assert channels.server.drain_events() == []
    assert channels.server.dropped_messages == 2


def test_opening_needs_an_established_association() -> None:
    channels = DataChannels(Pair().server, is_dtls_client=False)
    with pytest.raises(SctpUsageError):
        channels.open("JanusDataChannel", 0.0)
