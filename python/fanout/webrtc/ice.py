"""The ICE-lite agent of one peer (RFC 8445 section 2.5, consent freshness RFC 7675).

A lite agent never sends checks: it answers the peer's binding requests and is
always controlled. A request carrying USE-CANDIDATE nominates the address it
came from; valid requests from the nominated address keep consent alive.
Consent expires ``consent_timeout`` seconds after the last of them (RFC 7675's
30 s, :data:`CONSENT_TIMEOUT`, unless ``fanout.ice_consent_timeout`` says otherwise).
Sans-IO: every input carries ``now`` and the caller asks :meth:`next_timeout`.
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
    ERROR_CODE,
    FINGERPRINT,
    MESSAGE_INTEGRITY,
    XOR_MAPPED_ADDRESS,
    StunError,
    StunMessage,
    encode_error_code,
    encode_xor_address,
)

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
CONSENT_TIMEOUT = 30.0  # RFC 7675 section 5.1; the default of fanout.ice_consent_timeout

Address = tuple[str, int]

_ICE_CHARS = string.ascii_letters + string.digits + "+/"


def random_ice_string(length: int) -> str:
    """An ice-char string (RFC 8839 section 5.4) of ``length`` characters."""
    return "".join(secrets.choice(_ICE_CHARS) for _ in range(length))


@dataclass(frozen=True)
class Nominated:
    """The peer nominated ``address`` (first nomination or a move)."""

    address: Address


@dataclass(frozen=True)
class IceFailed:
    reason: str  # "ICE failed" | "consent expired"


IceEvent = Nominated | IceFailed


class IceLiteAgent:
    """Answers one peer's connectivity checks and tracks nomination and consent."""

    def __init__(
        self, now: float, ufrag: str | None = None, pwd: str | None = None, *, consent_timeout: float = CONSENT_TIMEOUT
    ) -> None:
        self.consent_timeout = consent_timeout  # seconds without a valid check from the nominated address
        self.local_ufrag = ufrag or random_ice_string(8)
        self.local_pwd = pwd or random_ice_string(24)
        self.remote_ufrag: str | None = None
        self.remote_pwd: str | None = None
        self.state = "new"
        self.nominated: Address | None = None
        self.valid_addresses: set[Address] = set()
        self.requests_rejected = 0
        self._created = now
        self._last_consent = now

    def restart(self) -> None:
        """New local credentials (an ICE restart, RFC 8445 section 9): checks must use them from
        now on. The nominated address keeps media and consent until the peer nominates anew."""
        self.local_ufrag = random_ice_string(8)
        self.local_pwd = random_ice_string(24)
        self.remote_ufrag = None
        self.remote_pwd = None
        self.valid_addresses = {self.nominated} if self.nominated is not None else set()

    def set_remote_credentials(self, ufrag: str, pwd: str) -> None:
        self.remote_ufrag = ufrag
        self.remote_pwd = pwd

    def receive(self, message: StunMessage, address: Address, now: float) -> tuple[bytes | None, list[IceEvent]]:
        """Handle a STUN message from ``address``: the datagram to answer with (if any) and events."""
        if self.state in ("failed", "closed") or message.message_type != BINDING_REQUEST:
            return None, []
        error = self._check_request(message)
        if error is not None:
            self.requests_rejected += 1
            logger.debug("binding request from %s rejected: %d %s", address, *error)
            response = StunMessage(BINDING_ERROR, message.transaction_id).with_attribute(
                ERROR_CODE, encode_error_code(*error)
            )
            if error[0] == 487:
                response = response.with_integrity(self.local_pwd.encode())
            return bytes(response.with_fingerprint()), []
        self.valid_addresses.add(address)
        events: list[IceEvent] = []
        if message.use_candidate and address != self.nominated:
            self.nominated = address
            self.state = "connected"
            self._last_consent = now
            events.append(Nominated(address))
        elif self.state == "new":
            self.state = "checking"
        if address == self.nominated:
            self._last_consent = now
        response = (
            StunMessage(BINDING_SUCCESS, message.transaction_id)
            .with_attribute(XOR_MAPPED_ADDRESS, encode_xor_address(address, message.transaction_id))
            .with_integrity(self.local_pwd.encode())
            .with_fingerprint()
        )
        return bytes(response), events

    def _check_request(self, message: StunMessage) -> tuple[int, str] | None:
        """None for a valid request, else the STUN error (code, reason) to answer with."""
        if message.attribute(FINGERPRINT) is not None and not message.verify_fingerprint():
            return 400, "Bad Request"
        try:
            username = message.username
            if username is None or message.attribute(MESSAGE_INTEGRITY) is None:
                return 400, "Bad Request"
            if username.split(":", 1)[0] != self.local_ufrag or not message.verify_integrity(self.local_pwd.encode()):
                return 401, "Unauthorized"
            if message.priority is None:
                return 400, "Bad Request"
            if message.ice_controlled is not None:
                return 487, "Role Conflict"
        except StunError:
            return 400, "Bad Request"
        return None

    def adopt(self, address: Address, now: float) -> list[IceEvent]:
        """Take ``address`` as nominated when the peer uses it before nominating anything.

        Chromium starts DTLS on a pair that passed its check and sends USE-CANDIDATE
        later; the address must already be valid (it sent an authenticated check).
        """
        if self.nominated is not None or address not in self.valid_addresses or self.state in ("failed", "closed"):
            return []
        self.nominated = address
        self.state = "connected"
        self._last_consent = now
        return [Nominated(address)]

    def handle_timeout(self, now: float) -> list[IceEvent]:
        deadline = self.next_timeout()
        if deadline is None or now < deadline:
            return []
        reason = "consent expired" if self.nominated is not None else "ICE failed"
        self.state = "failed"
        return [IceFailed(reason)]

    def next_timeout(self) -> float | None:
        if self.state in ("failed", "closed"):
            return None
        if self.nominated is None:
            return self._created + CONNECT_TIMEOUT
        return self._last_consent + self.consent_timeout

    def close(self) -> None:
        self.state = "closed"
