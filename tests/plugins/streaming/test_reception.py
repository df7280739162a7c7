from __future__ import annotations

from fanout.plugins.streaming.reception import Reception, compact_ntp
from fanout.webrtc.rtcp import ReceptionReport


def report(last_sr: int, delay: int, *, lost: int = 3, fraction: int = 64, jitter: int = 900) -> ReceptionReport:
    return ReceptionReport(ssrc=1, fraction_lost=fraction, packets_lost=lost, highest_sequence=10, jitter=jitter, last_sr=last_sr, delay_since_last_sr=delay)


def test_round_trip_is_arrival_minus_last_sender_report_minus_the_receivers_delay() -> None:
    sent = 1_700_000_000.0
    reception = Reception(clock_rate=90000)
    reception.update(report(compact_ntp(sent), delay=65536 // 10), now=sent + 0.125)  # held 100 ms, 25 ms in flight
    assert reception.rtt_ms is not None and abs(reception.rtt_ms - 25) < 0.1
    assert (reception.lost, reception.fraction_lost, reception.jitter_ms) == (3, 0.25, 10.0)


def test_no_round_trip_before_a_sender_report_was_answered() -> None:
    reception = Reception(clock_rate=48000)
    reception.update(report(0, 0), now=1_700_000_000.0)
    assert reception.rtt_ms is None and reception.reports == 1
