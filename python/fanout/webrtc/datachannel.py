"""WebRTC data channels (RFC 8831) and DCEP, their establishment protocol (RFC 8832), sans-IO.

:class:`DataChannels` runs the channels of one SCTP association
(:class:`~fanout.webrtc.sctp.SctpAssociation`): :meth:`DataChannels.open`
sends DATA_CHANNEL_OPEN (PPID 50) on a stream of our parity (the DTLS client
takes even stream ids, the server odd ones), :meth:`DataChannels.receive`
takes the association's :class:`~fanout.webrtc.sctp.MessageReceived` events:
a peer's DATA_CHANNEL_OPEN is answered with DATA_CHANNEL_ACK, our channel
becomes open on the peer's ACK, and user messages come out as
:class:`ChannelMessage` events. :meth:`DataChannels.send` sends a message as
text (PPID 51) or binary (PPID 53); empty messages go as one zero byte with
PPID 56 or 57 (RFC 8831 section 6.6). We may send on our channel before its
ACK arrives: everything we send is ordered, so the OPEN is delivered first.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from fanout.webrtc.sctp import MessageReceived, SctpAssociation, SctpUsageError

logger = logging.getLogger(__name__)

PPID_DCEP = 50
PPID_STRING = 51
PPID_BINARY = 53
PPID_STRING_EMPTY = 56
PPID_BINARY_EMPTY = 57

DATA_CHANNEL_ACK = 0x02
DATA_CHANNEL_OPEN = 0x03
CHANNEL_RELIABLE = 0x00  # ordered, reliable
CHANNEL_RELIABLE_UNORDERED = 0x80
PRIORITY_NORMAL = 256  # RFC 8831 section 6.4, as browsers send it

DEFAULT_LABEL = "JanusDataChannel"  # what Janus and janus.js name the channel they open


class DcepError(ValueError):
    """A DCEP message that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class DataChannelOpenMessage:
    """DATA_CHANNEL_OPEN (RFC 8832 section 5.1)."""

    channel_type: int = CHANNEL_RELIABLE
    priority: int = PRIORITY_NORMAL
    reliability: int = 0
    label: str = ""
    protocol: str = ""

    @classmethod
    def parse(cls, data: bytes) -> DataChannelOpenMessage:
        if len(data) < 12 or data[0] != DATA_CHANNEL_OPEN:
            raise DcepError("not a DATA_CHANNEL_OPEN")
        _, channel_type, priority, reliability, label_length, protocol_length = struct.unpack_from("!BBHIHH", data)
        if len(data) < 12 + label_length + protocol_length:
            raise DcepError("DATA_CHANNEL_OPEN shorter than its label and protocol")
        label = data[12 : 12 + label_length]
        protocol = data[12 + label_length : 12 + label_length + protocol_length]
        try:
            return cls(channel_type, priority, reliability, label.decode(), protocol.decode())
        except UnicodeDecodeError as error:
            raise DcepError(f"label or protocol is not UTF-8: {error}") from None

    def __bytes__(self) -> bytes:
        label, protocol = self.label.encode(), self.protocol.encode()
        header = struct.pack(
            "!BBHIHH", DATA_CHANNEL_OPEN, self.channel_type, self.priority, self.reliability, len(label), len(protocol)
        )
        return header + label + protocol


@dataclass(slots=True)
class DataChannel:
    stream_id: int
    label: str
    protocol: str
    opened_by_peer: bool
    state: str = "connecting"  # "connecting" (our OPEN sent, no ACK yet) | "open"


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    channel: DataChannel


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    stream_id: int
    label: str
    data: str | bytes


DataChannelEvent = ChannelOpened | ChannelMessage


class DataChannels:
    """The data channels of one association."""

    def __init__(self, association: SctpAssociation, *, is_dtls_client: bool) -> None:
        self.association = association
        self.channels: dict[int, DataChannel] = {}  # by stream id
        self.dropped_messages = 0  # undecodable DCEP, messages on no channel
        self._next_stream_id = 0 if is_dtls_client else 1
        self._events: list[DataChannelEvent] = []

    def channel(self, label: str) -> DataChannel | None:
        """The first channel (either side's) with this label."""
        return next((channel for channel in self.channels.values() if channel.label == label), None)

    def open(self, label: str, now: float, *, protocol: str = "") -> DataChannel:
        """Open a reliable, ordered channel. Raises SctpUsageError if the association is not up."""
        stream_id = self._next_stream_id
        while stream_id in self.channels:
            stream_id += 2
        if stream_id >= self.association.outbound_streams:
            raise SctpUsageError("no stream left for a data channel")
        open_message = DataChannelOpenMessage(label=label, protocol=protocol)
        self.association.send(stream_id, PPID_DCEP, bytes(open_message), now)
        self._next_stream_id = stream_id + 2
        channel = DataChannel(stream_id, label, protocol, opened_by_peer=False)
        self.channels[stream_id] = channel
        return channel

    def send(self, channel: DataChannel, data: str | bytes, now: float) -> None:
        """One message: text for ``str``, binary for ``bytes``. Raises SctpUsageError."""
        if isinstance(data, str):
            payload, ppid = data.encode(), PPID_STRING
        else:
            payload, ppid = bytes(data), PPID_BINARY
        self.send_payload(channel, payload, binary=ppid == PPID_BINARY, now=now)

    def send_payload(self, channel: DataChannel, payload: bytes, *, binary: bool, now: float) -> None:
        """``payload`` as they are, marked as text (PPID 51) or binary (PPID 53)."""
        if payload:
            ppid = PPID_BINARY if binary else PPID_STRING
        else:
            payload, ppid = b"\x00", PPID_BINARY_EMPTY if binary else PPID_STRING_EMPTY
        self.association.send(channel.stream_id, ppid, payload, now)

    def receive(self, message: MessageReceived, now: float) -> None:
        """A message the association delivered."""
        if message.ppid == PPID_DCEP:
            self._receive_dcep(message, now)
            return
        channel = self.channels.get(message.stream_id)
        if channel is None:
            self.dropped_messages += 1
            return
        data: str | bytes
        if message.ppid == PPID_STRING:
            data = message.data.decode(errors="replace")
        elif message.ppid == PPID_BINARY:
            data = message.data
        elif message.ppid == PPID_STRING_EMPTY:
            data = ""
        elif message.ppid == PPID_BINARY_EMPTY:
            data = b""
        else:
            self.dropped_messages += 1
            return
        self._events.append(ChannelMessage(channel.stream_id, channel.label, data))

    def drain_events(self) -> list[DataChannelEvent]:
        events, self._events = self._events, []
        return events

    def _receive_dcep(self, message: MessageReceived, now: float) -> None:
        kind = message.data[:1]
        if kind == bytes([DATA_CHANNEL_ACK]):
            channel = self.channels.get(message.stream_id)
            if channel is None or channel.opened_by_peer or channel.state == "open":
                self.dropped_messages += 1
                return
            channel.state = "open"
            self._events.append(ChannelOpened(channel))
            return
        try:
            open_message = DataChannelOpenMessage.parse(message.data)
        except DcepError as error:
            logger.debug("DCEP message dropped: %s", error)
            self.dropped_messages += 1
            return
        if message.stream_id in self.channels:
            self.dropped_messages += 1  # a second OPEN on a stream in use
            return
        channel = DataChannel(message.stream_id, open_message.label, open_message.protocol, opened_by_peer=True, state="open")
        self.channels[message.stream_id] = channel
        try:
            self.association.send(message.stream_id, PPID_DCEP, bytes([DATA_CHANNEL_ACK]), now)
        except SctpUsageError as error:
            logger.debug("DCEP ACK not sent: %s", error)
        self._events.append(ChannelOpened(channel))
