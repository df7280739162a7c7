"""Two SCTP associations wired together in simulated time (as h11's ConnectionPair)."""

from __future__ import annotations

from collections.abc import Callable

from fanout.webrtc.sctp import AssociationEstablished, MessageReceived, SctpAssociation

Drop = Callable[[bytes], bool]


class Pair:
    """A passive association (the server, as fanout is to browsers) and an active one."""

    def __init__(self) -> None:
        self.server = SctpAssociation()
        self.client = SctpAssociation()
        self.now = 0.0
        self.to_client: list[bytes] = []  # what the server sent, as the wire saw it

    def pump(self, drop_to_client: Drop = lambda _: False, drop_to_server: Drop = lambda _: False) -> None:
        for _ in range(1000):
            moved = False
            for packet in self.client.drain_packets():
                moved = True
                if not drop_to_server(packet):
                    self.server.receive(packet, self.now)
            for packet in self.server.drain_packets():
                moved = True
                self.to_client.append(packet)
                if not drop_to_client(packet):
                    self.client.receive(packet, self.now)
            if not moved:
                return
        raise AssertionError("the associations never went quiet")

    def run_timers(self, until: float, **drops: Drop) -> None:
        while True:
            deadlines = [d for d in (self.server.next_timeout(), self.client.next_timeout()) if d is not None]
            if not deadlines or min(deadlines) > until:
                self.now = until
                return
            self.now = max(self.now, min(deadlines))
            self.server.handle_timeout(self.now)
            self.client.handle_timeout(self.now)
            self.pump(**drops)


def established() -> Pair:
    pair = Pair()
    pair.client.start(pair.now)
    pair.pump()
    assert pair.server.drain_events() == [AssociationEstablished(65535, 65535)]
    assert pair.client.drain_events() == [AssociationEstablished(65535, 65535)]
    return pair


def messages(association: SctpAssociation) -> list[tuple[int, int, bytes]]:
    return [(e.stream_id, e.ppid, e.data) for e in association.drain_events() if isinstance(e, MessageReceived)]


