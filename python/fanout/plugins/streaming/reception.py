"""What a viewer's receiver reports say of each stream it gets: loss, jitter, round-trip time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

NTP_UNIX_OFFSET_SECONDS = 2_208_988_800


def compact_ntp(unix_time: float) -> int:
    """The middle 32 bits of the NTP timestamp of ``unix_time`` (RFC 3550's LSR/DLSR unit: 1/65536 s)."""
    return int((unix_time + NTP_UNIX_OFFSET_SECONDS) * 65536) & 0xFFFFFFFF


class ReportBlock(Protocol):
    """A receiver report block (the engine's ReceptionReport, or a parsed one)."""

    @property
    def fraction_lost(self) -> int: ...
    @property
    def packets_lost(self) -> int: ...
    @property
    def jitter(self) -> int: ...
    @property
    def last_sr(self) -> int: ...
    @property
    def delay_since_last_sr(self) -> int: ...


@dataclass
class Reception:
    """The latest receiver report about one stream."""

    clock_rate: int
    reports: int = 0
    lost: int = 0  # cumulative packets lost, as the viewer counts them
    fraction_lost: float = 0.0  # since its previous report, 0..1
    jitter_ms: float = 0.0
    rtt_ms: float | None = None  # None until a report answers one of our sender reports

    def update(self, report: ReportBlock, now: float | None = None) -> None:
        """Take a report block; the round trip from LSR/DLSR (RFC 3550 section 6.4.1)."""
        self.reports += 1
        self.lost = report.packets_lost
        self.fraction_lost = report.fraction_lost / 256
        self.jitter_ms = report.jitter * 1000 / self.clock_rate
        if report.last_sr:
            arrival = compact_ntp(time.time() if now is None else now)
            round_trip = (arrival - report.last_sr - report.delay_since_last_sr) & 0xFFFFFFFF
            if round_trip < 0x80000000:  # a report from before a clock step would wrap
                self.rtt_ms = round_trip * 1000 / 65536

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "reports": self.reports,
            "lost": self.lost,
            "fraction_lost": round(self.fraction_lost, 4),
            "jitter_ms": round(self.jitter_ms, 2),
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 2),
        }
