"""SourceSilence: which source streams are silent, from the engine's events."""

from __future__ import annotations

from fanout.plugins.streaming.silence import SourceSilence


def test_streams_start_silent_with_no_packet_yet() -> None:
    silence = SourceSilence([0, 65536])
    assert silence.ages_ms(now=10.0) == {0: None, 65536: None}
    assert silence.all_silent()


def test_a_silent_stream_ages_from_its_last_packet_and_a_sending_one_is_fresh() -> None:
    silence = SourceSilence([0, 65536])
    silence.resumed(0)
    silence.resumed(65536)
    assert silence.ages_ms(now=10.0) == {0: 0, 65536: 0}
    silence.silent(65536, silent_ms=250, now=10.0)
    assert silence.ages_ms(now=10.5) == {0: 0, 65536: 750}
    assert silence.is_silent(65536) and not silence.is_silent(0) and not silence.all_silent()
    silence.silent(0, silent_ms=1000, now=11.0)
    assert silence.all_silent()


def test_listeners_hear_every_change() -> None:
    silence = SourceSilence([0])
    changes: list[bool] = []
    silence.listeners.append(lambda: changes.append(silence.all_silent()))
    silence.resumed(0)
    silence.silent(0, silent_ms=100, now=1.0)
    assert changes == [False, True]


def test_a_mountpoint_without_streams_is_never_all_silent() -> None:
    assert not SourceSilence([]).all_silent()
