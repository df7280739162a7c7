"""What one viewer's transport-wide feedback message (RTPFB FMT 15, ~125 packets) costs fanout:
CPU microseconds per message in the control plane (the endpoint's datagram path, the peer's event,
the handle's receive_rtcp, the plugin's incoming_rtcp; Python's thread) and in the engine's
threads (its worker's work, its wake). A real Engine, a real DTLS-connected WebRtcPeer and real SRTCP; the
measured viewer sits in the middle of `--viewers` (paused) viewers of one mountpoint.

    .venv/bin/python bench/micro/feedback_cost.py [--root CHECKOUT] [--messages 400] [--viewers 440]

Run from the repository's root (it borrows the tests' helpers)."""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
if len(sys.argv) > 2 and sys.argv[1] == "--root":  # another checkout's fanout (with its built engine): before/after
    sys.path.insert(0, str(Path(sys.argv[2]) / "python"))
    del sys.argv[1:3]

from pylibsrtp import Policy, Session  # noqa: E402

from fanout._engine import Engine  # noqa: E402
from fanout.core.handle import Handle  # noqa: E402
from fanout.plugins.streaming.plugin import StreamingPlugin  # noqa: E402
from fanout.webrtc.endpoint import WebRtcEndpoint  # noqa: E402
from tests.engine.test_engine import rtp, source_stream, udp_socket, wait_until  # noqa: E402
from tests.webrtc.test_peer import BROWSER, SERVER_CERTIFICATE, connected_peer  # noqa: E402

if TYPE_CHECKING:
    from fanout._engine import ViewerStream

PACKETS_PER_MESSAGE = 125
EXTENSION_ID = 3
VIEWER_ID = 1_000_000
SSRC = 0x11223344


def transport_feedback(base: int, count: int, first_arrival_ticks: int) -> bytes:
    """RTPFB FMT 15: `count` packets from `base` all received, 1 ms (4 ticks of 250 us) apart."""
    chunks = b""
    for start in range(0, count, 7):
        chunk = 0xC000
        for position in range(min(7, count - start)):
            chunk |= 1 << (12 - 2 * position)  # received, one-byte delta
        chunks += struct.pack("!H", chunk)
    deltas = bytes([first_arrival_ticks % 256]) + bytes([4] * (count - 1))
    body = struct.pack("!IIHH", 0x0BADCAFE, SSRC, base, count) + bytes([0, 0, 0, 0]) + chunks + deltas
    body += bytes(-len(body) % 4)
    return struct.pack("!BBH", 0x80 | 15, 205, len(body) // 4) + body


def transport_sequences(sock: socket.socket, count: int) -> list[int]:
    """The transport-wide numbers of the next `count` RTP packets on `sock` (SRTP leaves the
    header extension in the clear)."""
    numbers: list[int] = []

    def enough() -> bool:
        while True:
            try:
                data = sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return len(numbers) >= count
            if 192 <= data[1] <= 223:
                continue
            assert data[16] == (EXTENSION_ID << 4) | 1
            numbers.append(struct.unpack("!H", data[17:19])[0])

    wait_until(enough)
    return numbers


def engine_cpu_ns() -> int:
    """CPU time of this process's threads but the main one (the engine's: its worker does the
    work here), from /proc/self/task/*/schedstat (nanoseconds, preemption not counted)."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        if int(task.name) != threading.get_native_id():
            total += int((task / "schedstat").read_text().split()[0])
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--viewers", type=int, default=440)
    parser.add_argument("--interval", type=float, default=1.0, help="ms between paced messages")
    parser.add_argument("--profile", action="store_true", help="cProfile the back-to-back control-plane loop")
    args = parser.parse_args()

    webrtc, source = udp_socket(), udp_socket()
    engine = Engine(webrtc.fileno(), max_send_delay_ms=10_000)
    port = engine.add_mountpoint(1, [source_stream()])[0]
    peer, _browser, keys = connected_peer()
    sinks = [udp_socket() for _ in range(8)]
    for sink in sinks:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    measured = udp_socket()
    measured.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    stream: list[ViewerStream] = [{"index": 0, "ssrc": SSRC, "payload_type": 111}]
    for index in range(args.viewers):
        if index == args.viewers // 2:
            engine.add_peer(VIEWER_ID, measured.getsockname(), keys.srtp_profile,  # type: ignore[arg-type]
                            keys.local_master_key, keys.remote_master_key)
            engine.subscribe(VIEWER_ID, 1, stream)
            engine.set_transport_cc(VIEWER_ID, EXTENSION_ID)
        engine.add_peer(index + 1, sinks[index % len(sinks)].getsockname(), "AEAD_AES_128_GCM", bytes(28), bytes(28))
        engine.subscribe(index + 1, 1, stream)
        engine.set_paused(index + 1, True)  # only the measured viewer is sent media: the others are looked past
    browser_srtcp = Session(Policy(key=keys.remote_master_key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                                   srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM))

    # The control plane: the endpoint's datagram path into a handle and the streaming plugin.
    loop = asyncio.new_event_loop()
    endpoint = WebRtcEndpoint(loop, udp_socket(), SERVER_CERTIFICATE, ["127.0.0.1"])
    plugin = object.__new__(StreamingPlugin)
    plugin.viewers = {VIEWER_ID: SimpleNamespace(rtcp_counts={})}  # type: ignore[dict-item]
    handle = object.__new__(Handle)
    handle._id, handle.plugin, handle.engine, handle.peer, handle.rtcp_dropped = (
        VIEWER_ID, plugin, engine, peer, 0)
    endpoint._transport = SimpleNamespace(sendto=lambda data, address: None)  # type: ignore[assignment]
    endpoint.add_peer(peer, handle.on_peer_event)
    endpoint._peers_by_address[BROWSER] = peer

    sequence = 0
    python_ns = worker_ns = 0
    for message in range(args.messages):
        for _ in range(PACKETS_PER_MESSAGE):
            source.sendto(rtp(sequence, 960 * sequence, b"opus" * 40), ("127.0.0.1", port))
            sequence += 1
        numbers = transport_sequences(measured, PACKETS_PER_MESSAGE)
        srtcp = browser_srtcp.protect_rtcp(transport_feedback(numbers[0], PACKETS_PER_MESSAGE, message))
        time.sleep(0.005)  # the worker idle again
        busy = engine_cpu_ns()
        started = time.thread_time_ns()
        endpoint.datagram_received(srtcp, BROWSER)
        python_ns += time.thread_time_ns() - started
        wait_until(lambda: engine.peer_stats(VIEWER_ID).transport_feedbacks == message + 1)
        worker_ns += engine_cpu_ns() - busy
    # Back to back (warm caches): the whole control-plane path, then the engine's receive_rtcp alone.
    import fanout
    print(f"fanout from {Path(fanout.__file__).parent}")
    base = numbers[0]
    serial = iter(range(1 << 30))

    def batch() -> list[bytes]:
        return [browser_srtcp.protect_rtcp(transport_feedback(base, PACKETS_PER_MESSAGE, next(serial)))
                for _ in range(1000)]

    if args.profile:
        import cProfile
        messages = batch()
        cProfile.runctx("for srtcp in messages: endpoint.datagram_received(srtcp, BROWSER)", globals(), locals(),
                        sort="tottime")
    path_us, engine_us = [], []
    for _ in range(7):  # the best and the median of seven batches of 1000: the machine is shared
        messages = batch()
        started = time.thread_time_ns()
        for srtcp in messages:
            endpoint.datagram_received(srtcp, BROWSER)
        path_us.append((time.thread_time_ns() - started) / len(messages) / 1000)
        messages = batch()
        started = time.thread_time_ns()
        for srtcp in messages:
            engine.receive_rtcp(VIEWER_ID, srtcp)
        engine_us.append((time.thread_time_ns() - started) / len(messages) / 1000)
    path_us.sort()
    engine_us.sort()
    print(f"back to back: control plane {path_us[0]:.1f} us/message (median {path_us[3]:.1f}), of which "
          f"receive_rtcp {engine_us[0]:.1f} (median {engine_us[3]:.1f})")
    # The read before all that: asyncio's default buffer (256 KiB) against the endpoint's.
    from fanout.webrtc import endpoint as endpoint_module

    reader, writer = udp_socket(), udp_socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
    read_us: dict[int, list[float]] = {}
    for _ in range(7):
        for size in (256 * 1024, getattr(endpoint_module, "UDP_READ_BYTES", 256 * 1024)):
            for srtcp in messages:
                writer.sendto(srtcp, reader.getsockname())
            started = time.thread_time_ns()
            for _ in messages:
                reader.recvfrom(size)
            read_us.setdefault(size, []).append((time.thread_time_ns() - started) / len(messages) / 1000)
    for size, times in read_us.items():
        times.sort()
        print(f"recvfrom({size}): {times[0]:.1f} us/message (median {times[3]:.1f})")
    # Paced as viewers send them (one every `--interval` ms) through a real socket and a running
    # asyncio loop: the loop thread's CPU per message with the endpoint's read alone (a route to
    # a receiver that does nothing), then with the whole path above.
    def read_only(data: bytes) -> None:
        pass

    def whole_path(data: bytes) -> None:
        endpoint.datagram_received(data, BROWSER)

    async def paced(receiver: Callable[[bytes], None], messages: list[bytes]) -> float:
        reading = await WebRtcEndpoint.open("127.0.0.1", 0, ["127.0.0.1"])
        sender = udp_socket()
        received = 0

        def count(data: bytes) -> None:
            nonlocal received
            received += 1
            receiver(data)

        reading.route_address(sender.getsockname(), count)

        def send() -> None:
            next_at = time.monotonic()
            for srtcp in messages:
                sender.sendto(srtcp, ("127.0.0.1", reading.port))
                next_at += args.interval / 1000
                time.sleep(max(0.0, next_at - time.monotonic()))

        started = time.thread_time_ns()
        thread = threading.Thread(target=send)
        thread.start()
        while received < len(messages) and thread.is_alive():
            await asyncio.sleep(0.05)
        thread.join()
        used = time.thread_time_ns() - started
        reading.close()
        sender.close()
        return used / max(received, 1) / 1000

    paced_us: dict[str, list[float]] = {}
    for _ in range(3):
        for label, receiver in (("read only", read_only), ("whole path", whole_path)):
            paced_us.setdefault(label, []).append(asyncio.run(paced(receiver, batch()[:500])))
    for label, times in paced_us.items():
        times.sort()
        print(f"paced ({args.interval} ms apart), loop thread: {label} {times[0]:.1f} us/message (median {times[1]:.1f})")
    assert handle.rtcp_dropped == 0
    stats = engine.peer_stats(VIEWER_ID)
    print(f"{args.messages} messages of {PACKETS_PER_MESSAGE} packets, {args.viewers} viewers: "
          f"control plane {python_ns / args.messages / 1000:.1f} us/message, "
          f"engine threads {worker_ns / args.messages / 1000:.1f} us/message; estimate {stats.estimate}, "
          f"rtcp counts {plugin.viewers[VIEWER_ID].rtcp_counts}")  # type: ignore[attr-defined]
    engine.close()


if __name__ == "__main__":
    main()
