"""A viewer's full ICE agent (RFC 8445) for one host candidate, sans-IO.

Roles follow RFC 8445 section 6.1.1: against an ICE-lite server (fanout) the
viewer is controlling and nominates with USE-CANDIDATE on its own check
(aggressive nomination); against a full server (Janus, which offers) the
offerer controls, so the viewer is controlled: it answers the server's checks,
sends its own (triggered) checks, and takes the pair the server nominates.
Once connected it keeps consent fresh (RFC 7675) with a binding request every
few seconds, which :meth:`IceClient.consent_request` builds.
"""

from __future__ import annotations

import logging
import secrets
import string
from dataclasses import dataclass

from fanout.webrtc.stun import (
    BINDING_ERROR,
    BINDING_REQUEST,
    BINDING_SUCCESS,
    ICE_CONTROLLED,
    ICE_CONTROLLING,
    PRIORITY,
    USE_CANDIDATE,
    USERNAME,
    XOR_MAPPED_ADDRESS,
    StunError,
    StunMessage,
    encode_xor_address,
)

logger = logging.getLogger(__name__)

Address = tuple[str, int]
HOST_PRIORITY = (126 << 24) | (65535 << 8) | 255  # host candidate, component 1
_ICE_CHARS = string.ascii_letters + string.digits + "+/"


def ice_string(length: int) -> str:
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(length))


@dataclass
class IceResult:
    response: bytes | None = None  # to send back to the address the message came from
    nominated: Address | None = None  # the pair is chosen: DTLS may start


class IceClient:
    """One viewer's ICE: local credentials, the server's, and the role."""

    def __init__(self, *, controlling: bool) -> None:
        self.local_ufrag = ice_string(8)
        self.local_pwd = ice_string(24)
        self.remote_ufrag = ""
        self.remote_pwd = ""
        self.controlling = controlling
        self.tie_breaker = secrets.randbits(64)
        self.nominated: Address | None = None
        self._sent: dict[bytes, Address] = {}

    def set_remote(self, ufrag: str, pwd: str) -> None:
        self.remote_ufrag = ufrag
        self.remote_pwd = pwd

    def check_request(self, address: Address) -> bytes:
        """A connectivity check to ``address`` (USE-CANDIDATE when controlling)."""
        transaction_id = secrets.token_bytes(12)
        self._sent[transaction_id] = address
        return self._request(transaction_id, nominate=self.controlling)

    def consent_request(self) -> bytes:
        """A consent freshness check on the chosen pair; its answer is not awaited."""
        return self._request(secrets.token_bytes(12), nominate=False)

    def _request(self, transaction_id: bytes, *, nominate: bool) -> bytes:
        message = StunMessage(BINDING_REQUEST, transaction_id).with_attribute(
            USERNAME, f"{self.remote_ufrag}:{self.local_ufrag}".encode()
        )
        message = message.with_attribute(PRIORITY, HOST_PRIORITY.to_bytes(4, "big"))
        role = ICE_CONTROLLING if self.controlling else ICE_CONTROLLED
        message = message.with_attribute(role, self.tie_breaker.to_bytes(8, "big"))
        if nominate:
            message = message.with_attribute(USE_CANDIDATE, b"")
        return bytes(message.with_integrity(self.remote_pwd.encode()).with_fingerprint())

    def receive(self, data: bytes, address: Address) -> IceResult:
        try:
            message = StunMessage.parse(data)
        except StunError:
            return IceResult()
        if message.message_type == BINDING_REQUEST:
            return self._answer(message, address)
        if message.message_type == BINDING_SUCCESS:
            sent_to = self._sent.pop(message.transaction_id, None)
            if sent_to is None or not message.verify_integrity(self.remote_pwd.encode()):
                return IceResult()
            if self.controlling and self.nominated is None:
                self.nominated = sent_to
                return IceResult(nominated=sent_to)
        elif message.message_type == BINDING_ERROR:
            logger.debug("check to %s failed: %s", address, message.error_code)
        return IceResult()

    def _answer(self, message: StunMessage, address: Address) -> IceResult:
        try:
            username = message.username or ""
        except StunError:
            return IceResult()
        if username.split(":", 1)[0] != self.local_ufrag or not message.verify_integrity(self.local_pwd.encode()):
            return IceResult()
        response = bytes(
            StunMessage(BINDING_SUCCESS, message.transaction_id)
            .with_attribute(XOR_MAPPED_ADDRESS, encode_xor_address(address, message.transaction_id))
            .with_integrity(self.local_pwd.encode())
            .with_fingerprint()
        )
        result = IceResult(response=response)
        if not self.controlling and message.use_candidate and self.nominated is None:
            self.nominated = address
            result.nominated = address
        return result
