import re
import time

import pytest
from OpenSSL import SSL

from fanout.webrtc.dtls import (
    AEAD_AES_128_GCM,
    AES_CM_128_HMAC_SHA1_80,
    DtlsCertificate,
    DtlsClosedEvent,
    DtlsConnectedEvent,
    DtlsTransport,
    SrtpKeys,
    pack_records,
)

SERVER_CERTIFICATE = DtlsCertificate.generate()
CLIENT_CERTIFICATE = DtlsCertificate.generate()


def exchange(a: DtlsTransport, b: DtlsTransport, now: float = 0.0) -> None:
    """Deliver datagrams both ways until both sides are quiet."""
    for _ in range(20):
        moved = False
        for source, target in ((a, b), (b, a)):
            for datagram in source.drain_datagrams():
                target.receive(datagram, now)
                moved = True
        if not moved:
            return


def pair(
    server_fingerprints: list[tuple[str, str]] | None = None,
    client_fingerprints: list[tuple[str, str]] | None = None,
    server_profiles: tuple = (AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80),
    client_profiles: tuple = (AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80),
) -> tuple[DtlsTransport, DtlsTransport]:
    server = DtlsTransport(
        SERVER_CERTIFICATE,
        is_server=True,
        remote_fingerprints=server_fingerprints or [("sha-256", CLIENT_CERTIFICATE.fingerprint())],
        profiles=server_profiles,
    )
    client = DtlsTransport(
        CLIENT_CERTIFICATE,
        is_server=False,
        remote_fingerprints=client_fingerprints or [("sha-256", SERVER_CERTIFICATE.fingerprint())],
        profiles=client_profiles,
    )
    server.start(0.0)
    client.start(0.0)
    return server, client


def test_certificate_fingerprints() -> None:
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", SERVER_CERTIFICATE.fingerprint())
    assert re.fullmatch(r"([0-9A-F]{2}:){19}[0-9A-F]{2}", SERVER_CERTIFICATE.fingerprint("sha-1"))
    assert len(SERVER_CERTIFICATE.fingerprint("sha-512")) == 64 * 3 - 1
    assert SERVER_CERTIFICATE.fingerprint() != CLIENT_CERTIFICATE.fingerprint()
    assert SERVER_CERTIFICATE.certificate.signature_algorithm_oid.dotted_string == "1.2.840.10045.4.3.2"  # ecdsa-sha256


def test_ours_against_ours_derive_matching_keys() -> None:
    server, client = pair()
    assert client.state == server.state == "connecting"
    exchange(client, server)
    assert server.state == client.state == "connected"
    [server_event] = server.drain_events()
    [client_event] = client.drain_events()
    assert isinstance(server_event, DtlsConnectedEvent) and isinstance(client_event, DtlsConnectedEvent)
    assert server_event.keys.profile == "AEAD_AES_128_GCM"
    assert len(server_event.keys.local_master_key) == 28
    assert server_event.keys.local_master_key == client_event.keys.remote_master_key
    assert server_event.keys.remote_master_key == client_event.keys.local_master_key
    assert server_event.keys.local_master_key != server_event.keys.remote_master_key
    assert server.next_timeout() is None and client.next_timeout() is None


@pytest.mark.parametrize(
    ("server_profiles", "client_profiles", "expected", "length"),
    [
        (
            (AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80),
            (AES_CM_128_HMAC_SHA1_80, AEAD_AES_128_GCM),
            "AEAD_AES_128_GCM",
            28,
        ),
        ((AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80), (AES_CM_128_HMAC_SHA1_80,), "AES_CM_128_HMAC_SHA1_80", 30),
        ((AES_CM_128_HMAC_SHA1_80,), (AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80), "AES_CM_128_HMAC_SHA1_80", 30),
    ],
)
def test_profiles(server_profiles: tuple, client_profiles: tuple, expected: str, length: int) -> None:
    server, client = pair(server_profiles=server_profiles, client_profiles=client_profiles)
    exchange(client, server)
    assert server.keys is not None and client.keys is not None
    assert server.keys.profile == client.keys.profile == expected
    assert len(server.keys.local_master_key) == length
    assert server.keys.local_master_key == client.keys.remote_master_key


def pyopenssl_client(profiles: bytes) -> SSL.Connection:
    """A DTLS client configured directly with pyOpenSSL, as aiortc does."""
    certificate = DtlsCertificate.generate()
    context = SSL.Context(SSL.DTLS_METHOD)
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
    context.use_certificate(certificate.certificate)
    context.use_privatekey(certificate.key)
    context.set_tlsext_use_srtp(profiles)
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    connection.set_app_data(certificate)
    return connection


def drive(connection: SSL.Connection, server: DtlsTransport) -> None:
    for _ in range(10):
        try:
            connection.do_handshake()
        except SSL.WantReadError:
            pass
        try:
            while True:
                server.receive(connection.bio_read(65536), 0.0)
        except SSL.WantReadError:
            pass
        for datagram in server.drain_datagrams():
            connection.bio_write(datagram)


@pytest.mark.parametrize(
    ("profiles", "expected", "key", "salt"),
    [
        (b"SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_128_GCM", "AEAD_AES_128_GCM", 16, 12),
        (b"SRTP_AES128_CM_SHA1_80", "AES_CM_128_HMAC_SHA1_80", 16, 14),
    ],
)
def test_ours_as_server_against_pyopenssl_client(profiles: bytes, expected: str, key: int, salt: int) -> None:
    client = pyopenssl_client(profiles)
    certificate = client.get_app_data()
    server = DtlsTransport(
        SERVER_CERTIFICATE, is_server=True, remote_fingerprints=[("sha-384", certificate.fingerprint("sha-384"))]
    )
    server.start(0.0)
    drive(client, server)
    assert server.state == "connected"
    material = client.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (key + salt))
    client_key = material[:key] + material[2 * key : 2 * key + salt]
    server_key = material[key : 2 * key] + material[2 * key + salt :]
    assert server.drain_events() == [DtlsConnectedEvent(SrtpKeys(expected, server_key, client_key))]
    assert client.get_peer_certificate(as_cryptography=True) == SERVER_CERTIFICATE.certificate


def test_wrong_fingerprint_fails_with_the_reason() -> None:
    wrong = [("sha-256", SERVER_CERTIFICATE.fingerprint())]  # the server's own, not the client's
    server, client = pair(server_fingerprints=wrong)
    exchange(client, server)
    assert server.state == "failed"
    assert server.drain_events() == [DtlsClosedEvent("fingerprint mismatch")]
    assert client.state == "failed"
    assert client.drain_events() == [DtlsClosedEvent("DTLS handshake failed")]


def test_wrong_server_fingerprint_fails_on_the_client() -> None:
    server, client = pair(client_fingerprints=[("sha-1", CLIENT_CERTIFICATE.fingerprint("sha-1"))])
    exchange(client, server)
    assert client.drain_events() == [DtlsClosedEvent("fingerprint mismatch")]
    assert server.drain_events() == [DtlsClosedEvent("DTLS handshake failed")]


def test_unknown_fingerprint_algorithm_matches_nothing() -> None:
    server, client = pair(server_fingerprints=[("md5", "00:11")])
    exchange(client, server)
    assert server.drain_events() == [DtlsClosedEvent("fingerprint mismatch")]


def test_close_notify() -> None:
    server, client = pair()
    exchange(client, server)
    server.drain_events()
    client.drain_events()
    client.close()
    assert client.state == "closed"
    exchange(client, server)
    assert server.state == "closed"
    assert server.drain_events() == [DtlsClosedEvent("DTLS closed")]
    assert client.drain_events() == []


def test_garbage_after_the_handshake_is_ignored() -> None:
    server, client = pair()
    exchange(client, server)
    server.drain_events()
    server.receive(b"\x17\xfe\xfd" + bytes(10) + b"\x00\x20" + bytes(32), 1.0)
    server.receive(b"\x16" + bytes(40), 1.0)
    assert server.state == "connected"
    assert server.drain_events() == []


def test_retransmission_of_a_lost_flight() -> None:
    """The server's first flight is lost; after OpenSSL's (real-time) timer the server sends it again."""
    server, client = pair()
    for datagram in client.drain_datagrams():
        server.receive(datagram, 10.0)
    lost = server.drain_datagrams()
    assert lost
    deadline = server.next_timeout()
    assert deadline is not None and deadline > 10.0
    time.sleep(deadline - 10.0 + 0.05)
    assert server.retransmissions == 0
    server.handle_timeout(deadline + 0.05)
    assert server.drain_datagrams() != []
    assert server.next_timeout() is not None
    assert server.retransmissions == 1  # handle_info's DTLS "retransmissions"


def test_pack_records_keeps_records_whole() -> None:
    def record(length: int) -> bytes:
        return b"\x16\xfe\xfd" + bytes(8) + length.to_bytes(2, "big") + bytes(length)

    records = [record(487), record(487), record(287), record(100)]
    assert [len(d) for d in pack_records(b"".join(records), 1200)] == [1000, 413]
    assert pack_records(record(1300), 1200) == [record(1300)]
