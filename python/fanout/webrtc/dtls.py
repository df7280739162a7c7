"""DTLS-SRTP (RFC 5763, RFC 5764) as a sans-IO transport over pyOpenSSL memory BIOs.

:class:`DtlsCertificate` is the server's self-signed ECDSA P-256 certificate,
made once at start; its fingerprint goes into every offer. :class:`DtlsTransport`
runs the handshake of one peer: datagrams in (:meth:`DtlsTransport.receive`),
datagrams out (:meth:`DtlsTransport.drain_datagrams`), events out
(:meth:`DtlsTransport.drain_events`), retransmission by
:meth:`DtlsTransport.handle_timeout`. The peer's self-signed certificate is
accepted by the verify callback only when its digest matches one of the
fingerprints from the peer's SDP. On success the SRTP master keys are exported
(RFC 5764 section 4.2). Once connected, application data (SCTP for data
channels, RFC 8261) goes both ways: :meth:`DtlsTransport.send` protects it,
and what the peer sends comes out as :class:`DtlsDataEvent`.

OpenSSL keeps its own retransmission clock: :meth:`DtlsTransport.next_timeout`
is ``now`` plus what OpenSSL says is left, and a timeout handled early is a
no-op after which OpenSSL reports the remaining time.
"""

from __future__ import annotations

import datetime
import logging
import secrets
from dataclasses import dataclass
from typing import ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL, crypto

logger = logging.getLogger(__name__)

DTLS1_2_VERSION = 0xFEFD
RECORD_HEADER_LENGTH = 13
DEFAULT_MTU = 1200

FINGERPRINT_ALGORITHMS: dict[str, hashes.HashAlgorithm] = {
    "sha-1": hashes.SHA1(),
    "sha-224": hashes.SHA224(),
    "sha-256": hashes.SHA256(),
    "sha-384": hashes.SHA384(),
    "sha-512": hashes.SHA512(),
}


@dataclass(frozen=True)
class SrtpProfile:
    """An SRTP protection profile: its RFC name, OpenSSL's name and key/salt sizes."""

    name: str
    openssl_name: bytes
    key_length: int
    salt_length: int


AEAD_AES_128_GCM = SrtpProfile("AEAD_AES_128_GCM", b"SRTP_AEAD_AES_128_GCM", 16, 12)
AES_CM_128_HMAC_SHA1_80 = SrtpProfile("AES_CM_128_HMAC_SHA1_80", b"SRTP_AES128_CM_SHA1_80", 16, 14)
SRTP_PROFILES = (AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80)  # in order of preference


def format_fingerprint(digest: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in digest)


class DtlsCertificate:
    """A self-signed ECDSA P-256 certificate and its key, for every peer of a server."""

    _contexts: dict[tuple[SrtpProfile, ...], SSL.Context]

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate
        self._contexts = {}

    @classmethod
    def generate(cls) -> DtlsCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "fanout")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(secrets.randbits(63) + 1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        """The certificate's digest as SDP writes it: upper-case hex pairs joined by colons."""
        return format_fingerprint(self.certificate.fingerprint(FINGERPRINT_ALGORITHMS[algorithm]))

    def context(self, profiles: tuple[SrtpProfile, ...] = SRTP_PROFILES) -> SSL.Context:
        """The DTLS 1.2 context for peers offering ``profiles`` (made once, then shared)."""
        context = self._contexts.get(profiles)
        if context is None:
            context = SSL.Context(SSL.DTLS_METHOD)
            context.set_min_proto_version(DTLS1_2_VERSION)
            context.set_max_proto_version(DTLS1_2_VERSION)
            context.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU)
            context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_peer_certificate)
            context.use_certificate(self.certificate)
            context.use_privatekey(self.key)
            context.set_tlsext_use_srtp(b":".join(profile.openssl_name for profile in profiles))
            self._contexts[profiles] = context
        return context


def _verify_peer_certificate(
    connection: SSL.Connection, certificate: crypto.X509, errno: int, depth: int, ok: int
) -> bool:
    """Accept the peer's self-signed certificate only if it matches an SDP fingerprint."""
    transport = connection.get_app_data()
    if depth != 0 or not isinstance(transport, DtlsTransport):
        return True
    return transport.certificate_matches(certificate.to_cryptography())


@dataclass(frozen=True)
class SrtpKeys:
    """The SRTP keys a handshake produced; each master key is key || salt."""

    profile: str
    local_master_key: bytes
    remote_master_key: bytes


@dataclass(frozen=True)
class DtlsConnectedEvent:
    keys: SrtpKeys


@dataclass(frozen=True)
class DtlsClosedEvent:
    reason: str  # "DTLS closed" (close_notify), "DTLS alert", "DTLS handshake failed", "fingerprint mismatch"


@dataclass(frozen=True)
class DtlsDataEvent:
    data: bytes  # one application data record's plaintext (an SCTP packet)


DtlsEvent = DtlsConnectedEvent | DtlsClosedEvent | DtlsDataEvent


class DtlsTransport:
    """The DTLS side of one peer: client or server, sans-IO."""

    STATES: ClassVar[tuple[str, ...]] = ("new", "connecting", "connected", "failed", "closed")

    def __init__(
        self,
        certificate: DtlsCertificate,
        *,
        is_server: bool,
        remote_fingerprints: list[tuple[str, str]],
        profiles: tuple[SrtpProfile, ...] = SRTP_PROFILES,
        mtu: int = DEFAULT_MTU,
    ) -> None:
        self.is_server = is_server
        self.remote_fingerprints = [(algorithm.lower(), value.upper()) for algorithm, value in remote_fingerprints]
        self.state = "new"
        self.keys: SrtpKeys | None = None
        self.application_data_received = 0
        self.retransmissions = 0  # handshake flights sent again (their answer was late)
        self.mtu = mtu
        self._profiles = profiles
        self._fingerprint_mismatch = False
        self._connection = SSL.Connection(certificate.context(profiles), None)
        self._connection.set_app_data(self)
        self._connection.set_ciphertext_mtu(mtu)
        if is_server:
            self._connection.set_accept_state()
        else:
            self._connection.set_connect_state()
        self._deadline: float | None = None
        self._datagrams: list[bytes] = []
        self._events: list[DtlsEvent] = []

    def certificate_matches(self, certificate: x509.Certificate) -> bool:
        for algorithm, value in self.remote_fingerprints:
            hash_algorithm = FINGERPRINT_ALGORITHMS.get(algorithm)
            if hash_algorithm is not None and format_fingerprint(certificate.fingerprint(hash_algorithm)) == value:
                return True
        self._fingerprint_mismatch = True
        return False

    def start(self, now: float) -> None:
        """Begin the handshake (a client sends its ClientHello; a server waits for one)."""
        if self.state == "new":
            self.state = "connecting"
            self._handshake(now)

    def receive(self, data: bytes, now: float) -> None:
        if self.state not in ("connecting", "connected"):
            return
        self._connection.bio_write(data)
        if self.state == "connecting":
            self._handshake(now)
        if self.state == "connected":
            self._read_application_data()
        self._flush(now)

    def send(self, data: bytes) -> None:
        """Protect ``data`` as one application data record (connected only; otherwise dropped)."""
        if self.state != "connected":
            return
        try:
            self._connection.send(data)
        except SSL.Error as error:
            logger.info("DTLS send failed: %s", error)
            self._fail("DTLS alert")
        self._flush(None)

    def handle_timeout(self, now: float) -> None:
        if self._deadline is None or now < self._deadline or self.state != "connecting":
            return
        try:
            if self._connection.DTLSv1_handle_timeout():
                self.retransmissions += 1
        except SSL.Error as error:
            logger.info("DTLS retransmission gave up: %s", error)
            self._fail("DTLS handshake failed")
        self._flush(now)

    def next_timeout(self) -> float | None:
        return self._deadline if self.state == "connecting" else None

    def close(self) -> None:
        """Close locally: close_notify is queued if a handshake was under way; no event."""
        if self.state in ("connecting", "connected"):
            try:
                self._connection.shutdown()
            except SSL.Error:
                pass
            self._flush(None)
        if self.state not in ("failed", "closed"):
            self.state = "closed"

    def drain_datagrams(self) -> list[bytes]:
        datagrams, self._datagrams = self._datagrams, []
        return datagrams

    def drain_events(self) -> list[DtlsEvent]:
        events, self._events = self._events, []
        return events

    def _handshake(self, now: float) -> None:
        try:
            self._connection.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error as error:
            if self._fingerprint_mismatch:
                logger.info("DTLS peer certificate matches none of %s", self.remote_fingerprints)
                self._fail("fingerprint mismatch")
            else:
                logger.info("DTLS handshake failed: %s", error)
                self._fail("DTLS handshake failed")
        else:
            self._handshake_done()
        self._flush(now)

    def _handshake_done(self) -> None:
        peer_certificate = self._connection.get_peer_certificate(as_cryptography=True)
        if peer_certificate is None or not self.certificate_matches(peer_certificate):
            self._fail("fingerprint mismatch")
            return
        selected = self._connection.get_selected_srtp_profile()
        profile = next((p for p in self._profiles if p.openssl_name == selected), None)
        if profile is None:
            logger.info("DTLS peer negotiated no SRTP profile (%r)", selected)
            self._fail("DTLS handshake failed")
            return
        self.keys = derive_srtp_keys(self._connection, profile, is_server=self.is_server)
        self.state = "connected"
        self._events.append(DtlsConnectedEvent(self.keys))

    def _read_application_data(self) -> None:
        while True:
            try:
                data = self._connection.recv(65536)
                self.application_data_received += 1
                self._events.append(DtlsDataEvent(data))
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                self.state = "closed"
                self._events.append(DtlsClosedEvent("DTLS closed"))
                return
            except SSL.Error as error:
                logger.info("DTLS alert: %s", error)
                self.state = "failed"
                self._events.append(DtlsClosedEvent("DTLS alert"))
                return

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self._events.append(DtlsClosedEvent(reason))

    def _flush(self, now: float | None) -> None:
        pending = b""
        while True:
            try:
                pending += self._connection.bio_read(65536)
            except SSL.WantReadError:
                break
        if pending:
            self._datagrams.extend(pack_records(pending, self.mtu))
        if now is not None:
            remaining = self._connection.DTLSv1_get_timeout() if self.state == "connecting" else None
            self._deadline = None if remaining is None else now + remaining


def derive_srtp_keys(connection: SSL.Connection, profile: SrtpProfile, *, is_server: bool) -> SrtpKeys:
    """RFC 5764 section 4.2: client key, server key, client salt, server salt."""
    key, salt = profile.key_length, profile.salt_length
    material = connection.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (key + salt))
    client = material[:key] + material[2 * key : 2 * key + salt]
    server = material[key : 2 * key] + material[2 * key + salt :]
    if is_server:
        return SrtpKeys(profile.name, local_master_key=server, remote_master_key=client)
    return SrtpKeys(profile.name, local_master_key=client, remote_master_key=server)


def pack_records(data: bytes, mtu: int) -> list[bytes]:
    """Split what OpenSSL wrote into DTLS records and pack whole records into datagrams of at most ``mtu``."""
    datagrams: list[bytes] = []
    current = b""
    offset = 0
    while offset < len(data):
        if offset + RECORD_HEADER_LENGTH > len(data):
            record = data[offset:]
        else:
            length = int.from_bytes(data[offset + 11 : offset + 13], "big")
            record = data[offset : offset + RECORD_HEADER_LENGTH + length]
        offset += len(record)
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams
