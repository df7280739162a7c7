from fanout.sources.pacing import FrameClock


def test_frames_come_due_on_the_clock_of_their_number() -> None:
    clock = FrameClock(start=100.0, period=0.02)
    assert clock.take(99.99) is None
    assert clock.take(100.0) == 0
    assert clock.take(100.0) is None
    assert clock.deadline() == 100.02
    assert clock.take(100.025) == 1
    assert clock.deadline() == 100.04  # a late frame does not push the next one back


def test_no_drift_over_an_hour_of_late_wakeups() -> None:
    clock = FrameClock(start=0.0, period=1 / 30)
    taken = 0
    now = 0.0
    while now < 3600:
        while clock.take(now) is not None:
            taken += 1
        now = clock.deadline() + 0.004  # every wakeup 4 ms late
    assert taken == 30 * 3600  # frames 0 to 107999, due before 3600 s
    assert clock.frames_skipped == 0


def test_catches_up_small_delays_and_skips_after_a_stall() -> None:
    clock = FrameClock(start=0.0, period=0.1, max_lateness=0.25)
    assert [clock.take(0.2), clock.take(0.2), clock.take(0.2), clock.take(0.2)] == [0, 1, 2, None]
    assert clock.take(10.05) == 100  # 7 frames missed, but the 10.0 s frame is the one due
    assert clock.frames_skipped == 97
    assert clock.take(10.05) is None
    assert clock.media_time(100) == 10.0
