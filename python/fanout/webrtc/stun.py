"""STUN messages (RFC 8489) with the attributes ICE uses (RFC 8445).

A :class:`StunMessage` keeps its attributes as raw type/value pairs in wire
order, so ``bytes(StunMessage.parse(data)) == data``; typed properties read
them. MESSAGE-INTEGRITY (HMAC-SHA1, short-term credentials: the key is the ICE
password) and FINGERPRINT (CRC-32 xor 0x5354554e) are appended with
:meth:`StunMessage.with_integrity` and :meth:`StunMessage.with_fingerprint`, and
checked with :meth:`StunMessage.verify_integrity` and
:meth:`StunMessage.verify_fingerprint`.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import struct
import zlib
from dataclasses import dataclass, replace

logger = logging.getLogger(__name__)

MAGIC_COOKIE = 0x2112A442
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E

BINDING_REQUEST = 0x0001
BINDING_INDICATION = 0x0011
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111

MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
SOFTWARE = 0x8022
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A


class StunError(ValueError):
    """A datagram that is not a well-formed STUN message; the message says why."""


def is_stun(data: bytes) -> bool:
    """Whether ``data`` looks like STUN: first two bits zero and the magic cookie (RFC 7983)."""
    return len(data) >= HEADER_LENGTH and data[0] < 4 and data[4:8] == MAGIC_COOKIE.to_bytes(4, "big")


@dataclass(frozen=True)
class StunAttribute:
    """One attribute as on the wire; ``padding`` keeps non-zero padding bytes as received."""

    type: int
    value: bytes
    padding: bytes = b""

    def __bytes__(self) -> bytes:
        pad_length = -len(self.value) % 4
        padding = self.padding if len(self.padding) == pad_length else bytes(pad_length)
        return struct.pack("!HH", self.type, len(self.value)) + self.value + padding


@dataclass(frozen=True)
class StunMessage:
    """A STUN message: type, 12-byte transaction id and attributes in wire order."""

    message_type: int
    transaction_id: bytes
    attributes: tuple[StunAttribute, ...] = ()

    @classmethod
    def parse(cls, data: bytes) -> StunMessage:
        if len(data) < HEADER_LENGTH:
            raise StunError(f"too short for a STUN header ({len(data)} bytes)")
        message_type, length, cookie = struct.unpack_from("!HHI", data)
        if message_type & 0xC000:
            raise StunError("first two bits are not zero")
        if cookie != MAGIC_COOKIE:
            raise StunError(f"bad magic cookie 0x{cookie:08x}")
        if length % 4:
            raise StunError(f"length {length} is not a multiple of 4")
        if HEADER_LENGTH + length != len(data):
            raise StunError(f"length {length} does not match the {len(data) - HEADER_LENGTH} bytes after the header")
        attributes: list[StunAttribute] = []
        offset = HEADER_LENGTH
        while offset < len(data):
            if offset + 4 > len(data):
                raise StunError(f"attribute header truncated at byte {offset}")
            attribute_type, attribute_length = struct.unpack_from("!HH", data, offset)
            value_end = offset + 4 + attribute_length
            padded_end = value_end + (-attribute_length % 4)
            if padded_end > len(data):
                raise StunError(f"attribute 0x{attribute_type:04x} truncated: {attribute_length} bytes announced")
            padding = data[value_end:padded_end]
            attributes.append(
                StunAttribute(attribute_type, data[offset + 4 : value_end], padding if any(padding) else b"")
            )
            offset = padded_end
        return cls(message_type, data[8:20], tuple(attributes))

    def __bytes__(self) -> bytes:
        body = b"".join(bytes(attribute) for attribute in self.attributes)
        return self._header(len(body)) + body

    def _header(self, length: int) -> bytes:
        return struct.pack("!HHI", self.message_type, length, MAGIC_COOKIE) + self.transaction_id

    def attribute(self, attribute_type: int) -> bytes | None:
        """The value of the first attribute of this type, or None."""
        for attribute in self.attributes:
            if attribute.type == attribute_type:
                return attribute.value
        return None

    def with_attribute(self, attribute_type: int, value: bytes) -> StunMessage:
        return replace(self, attributes=(*self.attributes, StunAttribute(attribute_type, value)))

    # Typed attribute access.

    @property
    def username(self) -> str | None:
        value = self.attribute(USERNAME)
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise StunError("USERNAME is not UTF-8") from error

    @property
    def priority(self) -> int | None:
        return self._uint(PRIORITY, 4)

    @property
    def use_candidate(self) -> bool:
        return self.attribute(USE_CANDIDATE) is not None

    @property
    def ice_controlling(self) -> int | None:
        """The tie-breaker of an ICE-CONTROLLING attribute."""
        return self._uint(ICE_CONTROLLING, 8)

    @property
    def ice_controlled(self) -> int | None:
        """The tie-breaker of an ICE-CONTROLLED attribute."""
        return self._uint(ICE_CONTROLLED, 8)

    @property
    def xor_mapped_address(self) -> tuple[str, int] | None:
        value = self.attribute(XOR_MAPPED_ADDRESS)
        return None if value is None else decode_xor_address(value, self.transaction_id)

    @property
    def error_code(self) -> tuple[int, str] | None:
        value = self.attribute(ERROR_CODE)
        if value is None:
            return None
        if len(value) < 4:
            raise StunError(f"ERROR-CODE of {len(value)} bytes")
        return (value[2] & 0x07) * 100 + value[3], value[4:].decode("utf-8", "replace")

    def _uint(self, attribute_type: int, size: int) -> int | None:
        value = self.attribute(attribute_type)
        if value is None:
            return None
        if len(value) != size:
            raise StunError(f"attribute 0x{attribute_type:04x} has {len(value)} bytes, expected {size}")
        return int.from_bytes(value, "big")

    # MESSAGE-INTEGRITY and FINGERPRINT.

    def with_integrity(self, key: bytes) -> StunMessage:
        """This message with MESSAGE-INTEGRITY appended (HMAC-SHA1 keyed with ``key``)."""
        body = b"".join(bytes(attribute) for attribute in self.attributes)
        digest = hmac.digest(key, self._header(len(body) + 24) + body, "sha1")
        return self.with_attribute(MESSAGE_INTEGRITY, digest)

    def with_fingerprint(self) -> StunMessage:
        """This message with FINGERPRINT appended."""
        body = b"".join(bytes(attribute) for attribute in self.attributes)
        crc = zlib.crc32(self._header(len(body) + 8) + body) ^ FINGERPRINT_XOR
        return self.with_attribute(FINGERPRINT, crc.to_bytes(4, "big"))

    def verify_integrity(self, key: bytes) -> bool:
        """Whether MESSAGE-INTEGRITY is present and matches ``key``."""
        for index, attribute in enumerate(self.attributes):
            if attribute.type == MESSAGE_INTEGRITY:
                before = b"".join(bytes(a) for a in self.attributes[:index])
                expected = hmac.digest(key, self._header(len(before) + 24) + before, "sha1")
                return hmac.compare_digest(expected, attribute.value)
        return False

    def verify_fingerprint(self) -> bool:
        """Whether the last attribute is a matching FINGERPRINT."""
        if not self.attributes or self.attributes[-1].type != FINGERPRINT:
            return False
        before = b"".join(bytes(a) for a in self.attributes[:-1])
        crc = zlib.crc32(self._header(len(before) + 8) + before) ^ FINGERPRINT_XOR
        return crc.to_bytes(4, "big") == self.attributes[-1].value


def encode_xor_address(address: tuple[str, int], transaction_id: bytes) -> bytes:
    """The value of an XOR-MAPPED-ADDRESS attribute for ``address``."""
    ip = ipaddress.ip_address(address[0])
    mask = MAGIC_COOKIE.to_bytes(4, "big") + (transaction_id if ip.version == 6 else b"")
    packed = bytes(a ^ b for a, b in zip(ip.packed, mask, strict=True))
    family = 0x01 if ip.version == 4 else 0x02
    return struct.pack("!BBH", 0, family, address[1] ^ (MAGIC_COOKIE >> 16)) + packed


def decode_xor_address(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    if len(value) < 4:
        raise StunError(f"XOR-MAPPED-ADDRESS of {len(value)} bytes")
    family = value[1]
    port = int.from_bytes(value[2:4], "big") ^ (MAGIC_COOKIE >> 16)
    mask = MAGIC_COOKIE.to_bytes(4, "big")
    if family == 0x01 and len(value) == 8:
        return str(ipaddress.IPv4Address(bytes(a ^ b for a, b in zip(value[4:], mask, strict=True)))), port
    if family == 0x02 and len(value) == 20:
        mask += transaction_id
        return str(ipaddress.IPv6Address(bytes(a ^ b for a, b in zip(value[4:], mask, strict=True)))), port
    raise StunError(f"XOR-MAPPED-ADDRESS with family {family} and {len(value)} bytes")


def encode_error_code(code: int, reason: str) -> bytes:
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode("utf-8")
