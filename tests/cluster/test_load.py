"""The load figure: worker busy fraction and viewers against capacity, between two readings."""

from fanout.cluster.load import EngineReading, LoadMeter


def test_the_first_reading_knows_only_viewers() -> None:
    load = LoadMeter(max_viewers=100).update(EngineReading(at=10.0, viewers=25, busy_ns=(0, 0), sent_bytes=0))
    assert (load.viewers, load.worker_busy, load.sent_gbps, load.load) == (25, 0.0, 0.0, 0.25)


def test_rates_come_from_the_difference_of_two_readings() -> None:
    meter = LoadMeter()
    meter.update(EngineReading(at=10.0, viewers=0, busy_ns=(0, 0), sent_bytes=0))
    # two seconds: workers busy 0.5 s and 1.5 s (mean 50 %); 500 MB sent = 2 Gbit/s
    load = meter.update(EngineReading(at=12.0, viewers=10, busy_ns=(500_000_000, 1_500_000_000), sent_bytes=500_000_000))
    assert (load.worker_busy, load.sent_gbps, load.load) == (0.5, 2.0, 0.5)


def test_viewers_over_capacity_dominate_an_idle_cpu_and_the_figure_stays_in_0_1() -> None:
    meter = LoadMeter(max_viewers=10)
    meter.update(EngineReading(at=0.0, viewers=0, busy_ns=(0,), sent_bytes=0))
    assert meter.update(EngineReading(at=1.0, viewers=30, busy_ns=(1000,), sent_bytes=0)).load == 1.0


def test_a_mountpoint_removed_between_readings_gives_no_negative_rate() -> None:
    meter = LoadMeter()
    meter.update(EngineReading(at=0.0, viewers=0, busy_ns=(0,), sent_bytes=10_000))
    assert meter.update(EngineReading(at=1.0, viewers=0, busy_ns=(0,), sent_bytes=0)).sent_gbps == 0.0
