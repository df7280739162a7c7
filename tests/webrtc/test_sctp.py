"""The SCTP association, sans-IO: two associations wired together in simulated time."""

from __future__ import annotations

import struct
from pathlib import Path
import google_crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout.webrtc import sctp
from fanout.webrtc.sctp import (
    AssociationClosed,
    Chunk,
    DataChunk,
    MessageReceived,
    Packet,
    SackChunk,
    SctpAssociation,
    SctpError,
    SctpPacketError,
    SctpUsageError,
    crc32c,
)
from fanout.webrtc.datachannel import PPID_DCEP, DataChannelOpenMessage
from tests.webrtc.sctp_pair import Drop, Pair, established, messages

DATA = Path(__file__).parent / "data"


def chunk_types(packet: bytes) -> list[int]:
    return [chunk.type for chunk in Packet.parse(packet).chunks]


# --- wire format ------------------------------------------------------------------


def test_crc32c_is_castagnoli() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    data = bytes(range(256)) * 5
    for length in (0, 1, 2, 3, 1099, 1100, len(data)):  # words, and an odd byte at the end
        assert crc32c(data[:length]) == google_crc32c.value(data[:length]), length


def test_packets_round_trip_and_carry_the_checksum_little_endian() -> None:
    packet = Packet(5000, 5000, 0x01020304, (Chunk(sctp.COOKIE_ACK, 0, b""), Chunk(sctp.DATA, 3, b"abcde")))
    data = bytes(packet)
    assert data[:8] == struct.pack("!HHI", 5000, 5000, 0x01020304)
    assert data[8:12] == google_crc32c.value(data[:8] + bytes(4) + data[12:]).to_bytes(4, "little")
    assert len(data) % 4 == 0  # chunks are padded
    assert Packet.parse(data) == packet


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "too short"),
        (bytes(12), "too short"),
        (bytes(Packet(1, 2, 3, (Chunk(sctp.COOKIE_ACK, 0, b""),)))[:-1] + b"\x01", "bad checksum"),
    ],
)
def test_malformed_packets_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(SctpPacketError, match=reason):
        Packet.parse(data)


def test_a_chunk_longer_than_the_packet_is_refused() -> None:
    body = struct.pack("!BBH", sctp.DATA, 3, 400) + bytes(16)
    header = struct.pack("!HHI", 5000, 5000, 1)
    data = header + crc32c(header + bytes(4) + body).to_bytes(4, "little") + body
    with pytest.raises(SctpPacketError, match="bad length"):
        Packet.parse(data)


def test_sack_round_trips() -> None:
    sack = SackChunk(1000, 65536, ((2, 3), (5, 5)), (999,))
    chunk = sack.chunk()
    assert SackChunk.parse(chunk.body) == sack


def test_captured_chromium_packets_round_trip() -> None:
    """Chromium 156 (janus.js asking for a data channel): its INIT, the DATA carrying its
    DATA_CHANNEL_OPEN, and a SACK reporting a duplicate TSN; as fanout decrypted them."""
    for name in ("sctp_init_chromium.bin", "sctp_dcep_open_chromium.bin", "sctp_sack_chromium.bin"):
        data = (DATA / name).read_bytes()
        assert bytes(Packet.parse(data)) == data, name


def test_chromium_init_is_answered_with_a_cookie() -> None:
    packet = Packet.parse((DATA / "sctp_init_chromium.bin").read_bytes())
    assert (packet.source_port, packet.destination_port, packet.verification_tag) == (5000, 5000, 0)
    [chunk] = packet.chunks
    init = sctp.InitChunk.parse(chunk.body)
    assert (init.outbound_streams, init.inbound_streams) == (65535, 65535)
    association = SctpAssociation()
    association.receive(bytes(packet), 0.0)
    [reply] = association.drain_packets()
    answer = Packet.parse(reply)
    assert answer.verification_tag == init.initiate_tag
    [init_ack] = answer.chunks
    assert init_ack.type == sctp.INIT_ACK
    parameters = dict(sctp.InitChunk.parse(init_ack.body).parameters)
    assert sctp.PARAM_STATE_COOKIE in parameters and sctp.PARAM_FORWARD_TSN_SUPPORTED in parameters


def test_chromium_data_channel_open() -> None:
    [chunk] = Packet.parse((DATA / "sctp_dcep_open_chromium.bin").read_bytes()).chunks
    data = DataChunk.parse(chunk.flags, chunk.body)
    assert (data.stream_id, data.ppid, data.flags) == (0, PPID_DCEP, sctp.FLAG_BEGIN | sctp.FLAG_END)
    assert DataChannelOpenMessage.parse(data.payload) == DataChannelOpenMessage(label="JanusDataChannel")  # priority "normal"


def test_chromium_sack_reports_a_duplicate() -> None:
    [chunk] = Packet.parse((DATA / "sctp_sack_chromium.bin").read_bytes()).chunks
    sack = SackChunk.parse(chunk.body)
    assert sack.gaps == () and sack.duplicates == (sack.cumulative_tsn,)


# --- setup -----------------------------------------------------------------------------


def test_four_way_handshake() -> None:
    pair = Pair()
    pair.client.start(0.0)
    [init] = pair.client.drain_packets()
    assert chunk_types(init) == [sctp.INIT] and Packet.parse(init).verification_tag == 0
    pair.server.receive(init, 0.0)
    [init_ack] = pair.server.drain_packets()
    assert chunk_types(init_ack) == [sctp.INIT_ACK]
    assert pair.server.state == "closed"  # nothing kept until the cookie comes back
    pair.client.receive(init_ack, 0.0)
    [cookie_echo] = pair.client.drain_packets()
    assert chunk_types(cookie_echo) == [sctp.COOKIE_ECHO]
    pair.server.receive(cookie_echo, 0.0)
    [cookie_ack] = pair.server.drain_packets()
    assert chunk_types(cookie_ack) == [sctp.COOKIE_ACK]
    assert pair.server.state == "established"
    pair.client.receive(cookie_ack, 0.0)
    assert pair.client.state == "established"


def test_a_forged_cookie_is_dropped() -> None:
    pair = Pair()
    pair.client.start(0.0)
    pair.server.receive(pair.client.drain_packets()[0], 0.0)
    pair.client.receive(pair.server.drain_packets()[0], 0.0)
    [cookie_echo] = pair.client.drain_packets()
    packet = Packet.parse(cookie_echo)
    cookie = bytearray(packet.chunks[0].body)
    cookie[10] ^= 0xFF
    forged = Packet(packet.source_port, packet.destination_port, packet.verification_tag, (Chunk(sctp.COOKIE_ECHO, 0, bytes(cookie)),))
    pair.server.receive(bytes(forged), 0.0)
    assert pair.server.state == "closed" and pair.server.drain_packets() == []
    assert pair.server.counters.dropped_chunks == 1


def test_a_stale_cookie_is_dropped() -> None:
    pair = Pair()
    pair.client.start(0.0)
    pair.server.receive(pair.client.drain_packets()[0], 0.0)
    pair.client.receive(pair.server.drain_packets()[0], 0.0)
    [cookie_echo] = pair.client.drain_packets()
    pair.server.receive(cookie_echo, sctp.COOKIE_LIFETIME + 1)
    assert pair.server.state == "closed"


def test_init_is_retransmitted_then_given_up() -> None:
    pair = Pair()
    pair.client.start(0.0)
    pair.run_timers(1000.0, drop_to_server=lambda _: True)
    assert pair.client.state == "terminated"
    assert pair.client.drain_events() == [AssociationClosed("no answer to INIT")]


def test_a_lost_cookie_ack_is_sent_again() -> None:
    pair = Pair()
    pair.client.start(0.0)
    pair.pump(drop_to_client=lambda packet: sctp.COOKIE_ACK in chunk_types(packet))  # the first COOKIE-ACK
    assert pair.server.state == "established" and pair.client.state == "cookie-echoed"
    pair.run_timers(5.0)
    assert pair.client.state == "established"


def test_packets_with_the_wrong_verification_tag_are_dropped() -> None:
    pair = established()
    wrong = Packet(5000, 5000, 12345, (DataChunk(0, 0, 0, 51, 3, b"x").chunk(),))
    pair.server.receive(bytes(wrong), pair.now)
    assert pair.server.counters.dropped_packets == 1
    assert pair.server.drain_events() == [] and pair.server.drain_packets() == []


# --- data ----------------------------------------------------------------------------------


def test_messages_both_ways_in_order() -> None:
    pair = established()
    for i in range(20):
        pair.server.send(1, 51, f"to client {i}".encode(), pair.now)
        pair.client.send(0, 53, f"to server {i}".encode(), pair.now)
    pair.pump()
    assert messages(pair.client) == [(1, 51, f"to client {i}".encode()) for i in range(20)]
    assert messages(pair.server) == [(0, 53, f"to server {i}".encode()) for i in range(20)]
    assert pair.server.buffered_amount == 0 and pair.client.buffered_amount == 0


def test_a_large_message_is_fragmented_and_reassembled() -> None:
    pair = established()
    message = bytes(range(256)) * 40  # 10 KiB
    pair.server.send(3, 53, message, pair.now)
    pair.pump()
    data_chunks = [
        DataChunk.parse(c.flags, c.body) for p in pair.to_client for c in Packet.parse(p).chunks if c.type == sctp.DATA
    ]
    assert len(data_chunks) > 5
    assert data_chunks[0].flags & sctp.FLAG_BEGIN and data_chunks[-1].flags & sctp.FLAG_END
    assert all(len(bytes(c.chunk())) + sctp.COMMON_HEADER_LENGTH <= sctp.MAX_PACKET_SIZE for c in data_chunks)
    assert messages(pair.client) == [(3, 53, message)]


def test_lost_packets_are_retransmitted_and_order_is_kept() -> None:
    pair = established()
    count = iter(range(10**6))
    lossy: Drop = lambda _: next(count) % 3 == 0  # noqa: E731 - every third packet to the client is lost
    sent = [f"message {i}".encode() * 30 for i in range(100)]
    for message in sent:
        pair.server.send(5, 51, message, pair.now)
    pair.pump(drop_to_client=lossy)
    pair.run_timers(120.0, drop_to_client=lossy)
    assert [data for _, _, data in messages(pair.client)] == sent
    assert pair.server.counters.retransmissions > 0
    assert pair.server.counters.fast_retransmissions > 0  # gaps reported by SACKs, before any timeout
    assert pair.server.buffered_amount == 0


def test_lost_sacks_are_covered_by_the_t3_timer() -> None:
    pair = established()
    pair.server.send(1, 51, b"hello", pair.now)
    pair.pump(drop_to_server=lambda _: True)  # the client's SACK is lost
    assert pair.server.buffered_amount == 5
    rto = pair.server.rto
    pair.run_timers(pair.now + rto)
    assert pair.server.counters.timeouts == 1
    assert pair.server.buffered_amount == 0
    assert messages(pair.client) == [(1, 51, b"hello")]
    assert pair.client.counters.duplicate_tsns == 1


def test_unordered_messages_are_delivered_when_whole() -> None:
    pair = established()
    pair.server.send(1, 53, b"first", pair.now, ordered=False)
    pair.server.send(1, 53, b"second", pair.now, ordered=False)
    pair.pump()
    assert [data for _, _, data in messages(pair.client)] == [b"first", b"second"]


def test_a_peer_that_never_answers_is_given_up() -> None:
    pair = established()
    pair.server.send(1, 51, b"hello?", pair.now)
    pair.pump(drop_to_client=lambda _: True)
    pair.run_timers(10_000.0, drop_to_client=lambda _: True)
    assert pair.server.state == "terminated"
    assert pair.server.drain_events() == [AssociationClosed("too many retransmissions")]


def test_sending_is_refused_before_establishment_and_on_unknown_streams() -> None:
    association = SctpAssociation()
    with pytest.raises(SctpUsageError, match="state closed"):
        association.send(1, 51, b"x", 0.0)
    pair = established()
    with pytest.raises(SctpUsageError, match="stream 65535"):
        pair.server.send(65535, 51, b"x", 0.0)
    with pytest.raises(SctpUsageError, match="empty"):
        pair.server.send(1, 51, b"", 0.0)


def test_the_congestion_window_limits_what_is_in_flight() -> None:
    pair = established()
    for _ in range(100):
        pair.server.send(1, 53, bytes(1000), pair.now)
    assert pair.server.flight_size <= 4 * sctp.MAX_PACKET_SIZE
    pair.pump()
    assert len(messages(pair.client)) == 100


# --- heartbeat and teardown -------------------------------------------------------------------


def test_heartbeat_is_echoed() -> None:
    pair = established()
    info = struct.pack("!HH", 1, 12) + b"lubdub!!"
    heartbeat = Packet(5000, 5000, pair.server._local_tag, (Chunk(sctp.HEARTBEAT, 0, info),))
    pair.server.receive(bytes(heartbeat), pair.now)
    [reply] = pair.server.drain_packets()
    parsed = Packet.parse(reply)
    assert parsed.verification_tag == pair.client._local_tag
    assert parsed.chunks == (Chunk(sctp.HEARTBEAT_ACK, 0, info),)


def test_abort_closes_at_once() -> None:
    pair = established()
    pair.client.abort()
    pair.pump()
    assert pair.server.state == "terminated"
    assert pair.server.drain_events() == [AssociationClosed("aborted by peer")]
    assert pair.client.drain_events() == []  # a local abort tells nobody locally


def test_graceful_shutdown_waits_for_outstanding_data() -> None:
    pair = established()
    pair.server.send(1, 51, b"last words", pair.now)
    pair.server.close(pair.now)
    assert pair.server.state == "shutdown-pending"
    pair.pump()
    assert pair.server.state == pair.client.state == "terminated"
    assert pair.client.drain_events() == [MessageReceived(1, 51, b"last words", True), AssociationClosed("shut down")]
    assert pair.server.drain_events() == [AssociationClosed("shut down")]


# --- fuzzing ---------------------------------------------------------------------------------------


def fuzz_packet(pair: Pair, chunks: list[tuple[int, int, bytes]]) -> bytes:
    """Well-formed, correctly tagged and checksummed packets of arbitrary chunks."""
    return bytes(Packet(5000, 5000, pair.server._local_tag, tuple(Chunk(t, f, b) for t, f, b in chunks)))


def check_still_works(pair: Pair) -> None:
    server = pair.server
    assert server.state in sctp.STATES
    queued = sum(len(chunk.payload) for chunk in server._send_queue)
    assert server.buffered_amount == queued + sum(sent.size for sent in server._sent.values())
    assert server.flight_size >= 0
    pair.server.next_timeout()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_raise_only_packet_errors_and_change_nothing(data: bytes) -> None:
    pair = established()
    state = (pair.server.state, pair.server._cumulative_tsn, pair.server._next_tsn, pair.server.counters)
    try:
        pair.server.receive(data, pair.now)
    except SctpPacketError:
        pass
    assert (pair.server.state, pair.server._cumulative_tsn, pair.server._next_tsn) == state[:3]
    pair.server.send(1, 51, b"still there", pair.now)
    pair.pump()
    assert messages(pair.client) == [(1, 51, b"still there")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_packets_never_break_the_association(data: st.DataObject) -> None:
    pair = established()
    pair.server.send(1, 51, b"a" * 3000, pair.now)
    pair.client.send(0, 51, b"b" * 3000, pair.now)
    captured = [*pair.client.drain_packets(), *pair.server.drain_packets()]  # real DATA, to mutate
    seed = data.draw(st.sampled_from(captured))
    mutated = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        mutated = mutated[: data.draw(st.integers(0, len(mutated)))]
    try:
        pair.server.receive(bytes(mutated), pair.now)
    except SctpError as error:
        assert isinstance(error, SctpPacketError)
    check_still_works(pair)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 14, 192, 64, 130, 255]),
            st.integers(0, 255),
            st.binary(max_size=64),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_well_formed_nonsense_raises_nothing_unexpected(chunks: list[tuple[int, int, bytes]]) -> None:
    pair = established()
    pair.server.send(1, 51, b"in flight", pair.now)
    pair.server.drain_packets()
    try:
        pair.server.receive(fuzz_packet(pair, chunks), pair.now)
    except SctpError as error:
        assert isinstance(error, SctpPacketError)
    check_still_works(pair)
    pair.server.handle_timeout(pair.now + 100)
    check_still_works(pair)
    if pair.server.established:
        pair.server.send(1, 51, b"after", pair.now)
