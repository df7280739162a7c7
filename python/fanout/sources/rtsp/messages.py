"""RTSP 1.0 messages (RFC 2326 section 6 and 7): requests out, responses in.

Responses are parsed strictly: a status line ``RTSP/1.0 <3 digits> <reason>``,
``Name: value`` header lines, a body of exactly ``Content-Length`` bytes, a
``CSeq``. Anything else raises :class:`RtspProtocolError` with the reason, so a
misbehaving server is named rather than guessed at. Interleaved binary frames
(RFC 2326 section 10.12: ``$``, a channel byte, a 16-bit length, that many bytes
of RTP or RTCP) come out of :meth:`ResponseParser.feed_all` as
:class:`InterleavedFrame`, or go to its ``frame_relay``; one longer than :data:`MAX_INTERLEAVED_BYTES` raises
:class:`InterleavedFrameError` (nothing fanout relays is that long, and a
server that sends it is not one to trust with the rest of the stream).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
# The longest RTP or RTCP packet an interleaved frame may carry: the engine's
# largest source packet (MAX_RTP_LEN in src/media/packet.rs).
MAX_INTERLEAVED_BYTES = 1984
_STATUS_LINE = re.compile(r"^RTSP/1\.0 ([1-5][0-9][0-9])(?: (.*))?$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def is_number(text: str) -> bool:
    """ASCII digits only, and not absurdly many (str.isdigit also takes "²" and "٣")."""
    return 0 < len(text) <= 10 and text.isascii() and text.isdigit()


class RtspError(Exception):
    """The RTSP exchange failed; the message says how."""


class RtspProtocolError(RtspError):
    """The server sent something that is not a well-formed RTSP 1.0 response."""


class InterleavedFrameError(RtspProtocolError):
    """An interleaved frame longer than any RTP packet fanout relays."""


@dataclass(frozen=True, slots=True)
class InterleavedFrame:
    """One RTP or RTCP packet on the control connection (RFC 2326 section 10.12)."""

    channel: int
    payload: bytes

    def __bytes__(self) -> bytes:
        return b"$" + bytes([self.channel]) + len(self.payload).to_bytes(2, "big") + self.payload


@dataclass(frozen=True, slots=True)
class RtspRequest:
    method: str
    url: str
    cseq: int
    headers: tuple[tuple[str, str], ...] = ()

    def __bytes__(self) -> bytes:
        lines = [f"{self.method} {self.url} RTSP/1.0", f"CSeq: {self.cseq}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True, slots=True)
class RtspResponse:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first header of this name (case-insensitive), None if absent."""
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)

    def all_headers(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    @property
    def cseq(self) -> int:
        value = self.header("CSeq")
        if value is None or not is_number(value.strip()):
            raise RtspProtocolError(f"response without a valid CSeq ({value!r})")
        return int(value)

    @classmethod
    def parse(cls, data: bytes) -> RtspResponse:
        """One complete response (head and body); RtspProtocolError if malformed or incomplete."""
        parser = ResponseParser()
        responses = parser.feed(data)
        if len(responses) != 1 or parser.pending:
            raise RtspProtocolError("not exactly one complete response")
        return responses[0]


# Sends on the whole frames from an offset of the buffer; returns where the first thing that
# is not a whole frame starts (fanout._engine.InterleavedRelay.relay).
FrameRelay = Callable[[bytearray, int], int]


class ResponseParser:
    """Bytes from the control connection in, complete responses out (incremental).

    With a ``frame_relay``, runs of interleaved frames go to it (the engine's relay, which
    sends their packets on) rather than out of :meth:`feed_all`."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.frame_relay: FrameRelay | None = None

    @property
    def pending(self) -> int:
        """Bytes received that do not make a whole message yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[RtspResponse]:
        """The complete responses in what came so far; interleaved frames are skipped."""
        return [message for message in self.feed_all(data) if isinstance(message, RtspResponse)]

    def feed_all(self, data: bytes) -> list[RtspResponse | InterleavedFrame]:
        """The complete responses and interleaved frames in what came so far, in order."""
        self._buffer += data
        buffer = self._buffer
        messages: list[RtspResponse | InterleavedFrame] = []
        start = 0  # consumed bytes are cut once, at the end
        try:
            while start < len(buffer):
                if buffer[start] == 0x24 and self.frame_relay is not None:
                    try:
                        end = self.frame_relay(buffer, start)
                    except ValueError as error:  # a frame longer than the engine takes
                        raise InterleavedFrameError(str(error)) from None
                    if end == start:  # a frame still coming
                        break
                    start = end
                    continue
                if buffer[start] == 0x24:  # "$": an interleaved frame, 4-byte header
                    if len(buffer) - start < 4:
                        break
                    size = int.from_bytes(buffer[start + 2 : start + 4], "big")
                    if size > MAX_INTERLEAVED_BYTES:
                        raise InterleavedFrameError(
                            f"an interleaved frame of {size} bytes on channel {buffer[start + 1]} "
                            f"(at most {MAX_INTERLEAVED_BYTES} are taken)"
                        )
                    if len(buffer) - start < 4 + size:
                        break
                    messages.append(InterleavedFrame(buffer[start + 1], bytes(buffer[start + 4 : start + 4 + size])))
                    start += 4 + size
                    continue
                end = buffer.find(b"\r\n\r\n", start)
                if end < 0:
                    if len(buffer) - start > MAX_HEADER_BYTES:
                        raise RtspProtocolError(f"response head longer than {MAX_HEADER_BYTES} bytes")
                    if not b"RTSP/1.0 ".startswith(bytes(buffer[start : start + 9])):
                        raise RtspProtocolError(f"not an RTSP/1.0 response: {bytes(buffer[start : start + 40])!r}")
                    break
                status, reason, headers = _parse_head(bytes(buffer[start:end]))
                length_value = next((value for key, value in headers if key.lower() == "content-length"), "0")
                if not is_number(length_value):
                    raise RtspProtocolError(f"invalid Content-Length {length_value!r}")
                length = int(length_value)
                if length > MAX_BODY_BYTES:
                    raise RtspProtocolError(f"body of {length} bytes is over the {MAX_BODY_BYTES} bytes allowed")
                body_start = end + 4
                if len(buffer) < body_start + length:
                    break
                body = bytes(buffer[body_start : body_start + length])
                start = body_start + length
                response = RtspResponse(status, reason, headers, body)
                response.cseq  # noqa: B018 - checks it is there
                messages.append(response)
        finally:
            del buffer[:start]
        return messages


def _parse_head(head: bytes) -> tuple[int, str, tuple[tuple[str, str], ...]]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise RtspProtocolError("response head is not UTF-8") from None
    lines = text.split("\r\n")
    matched = _STATUS_LINE.match(lines[0])
    if matched is None:
        raise RtspProtocolError(f"invalid status line {lines[0][:80]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _HEADER_NAME.match(name):
            raise RtspProtocolError(f"invalid header line {line[:80]!r}")
        if "\r" in value or "\n" in value:
            raise RtspProtocolError(f"invalid header line {line[:80]!r}")
        headers.append((name, value.strip()))
    return int(matched.group(1)), matched.group(2) or "", tuple(headers)


def header_parameters(value: str) -> tuple[str, dict[str, str]]:
    """``Session: 1234;timeout=60`` -> ("1234", {"timeout": "60"})."""
    first, *rest = value.split(";")
    parameters: dict[str, str] = {}
    for item in rest:
        key, _, item_value = item.partition("=")
        parameters[key.strip().lower()] = item_value.strip()
    return first.strip(), parameters
