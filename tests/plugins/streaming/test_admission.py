"""Admission control: the limits, the load measured from the workers' busy time, the refusal's error."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fanout.config.jcfg import ConfigError, parse
from fanout.config.settings import read_settings
from fanout.plugins.streaming.admission import RETRY_AFTER_SECONDS, Admission, AdmissionLimits, OverloadedError


@dataclass
class FakeWorker:
    busy_ns: int = 0


class FakeEngine:
    def __init__(self, workers: int) -> None:
        self.workers = [FakeWorker() for _ in range(workers)]

    def worker_stats(self) -> list[FakeWorker]:
        return [FakeWorker(worker.busy_ns) for worker in self.workers]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_without_limits_every_viewer_is_admitted() -> None:
    admission = Admission(AdmissionLimits())
    assert not admission.limits.enabled
    admission.check(viewers=1_000_000)
    assert admission.refused == {"max_viewers": 0, "max_worker_load": 0}


def test_max_viewers_refuses_the_one_past_the_limit_with_janus_error_470_and_a_retry_after() -> None:
    admission = Admission(AdmissionLimits(max_viewers=3))
    admission.check(viewers=2)
    with pytest.raises(OverloadedError) as refusal:
        admission.check(viewers=3)
    assert refusal.value.limit == "max_viewers"
    assert refusal.value.to_data() == {
        "streaming": "event",
        "error_code": 470,
        "error": "Too many viewers on this node (3 of max_viewers 3); try again later",
        "retry_after": RETRY_AFTER_SECONDS,
    }
    assert admission.refused == {"max_viewers": 1, "max_worker_load": 0}


def test_max_worker_load_is_the_workers_mean_busy_fraction_since_the_last_sample() -> None:
    engine, clock = FakeEngine(workers=2), FakeClock()
    admission = Admission(AdmissionLimits(max_worker_load=0.8), engine, clock)  # type: ignore[arg-type]
    admission.sample_worker_load()
    clock.now += 1.0
    engine.workers[0].busy_ns += 900_000_000  # 90% busy
    engine.workers[1].busy_ns += 500_000_000  # 50% busy
    admission.sample_worker_load()
    assert admission.worker_load == pytest.approx(0.7)
    admission.check(viewers=50)

    clock.now += 2.0
    engine.workers[0].busy_ns += 2_000_000_000  # 100%
    engine.workers[1].busy_ns += 1_400_000_000  # 70%
    admission.sample_worker_load()
    assert admission.worker_load == pytest.approx(0.85)
    with pytest.raises(OverloadedError, match=r"engine workers 85% busy, max_worker_load 80%") as refusal:
        admission.check(viewers=50)
    assert refusal.value.to_data()["retry_after"] == RETRY_AFTER_SECONDS
    assert admission.refused == {"max_viewers": 0, "max_worker_load": 1}


def test_the_limits_are_read_from_the_fanout_group_and_off_by_default() -> None:
    def settings_of(text: str) -> tuple[int, float]:
        settings, _ = read_settings(parse(text, "janus.jcfg"), None, None, detect_ips=lambda: ["192.0.2.7"])
        return settings.max_viewers, settings.max_worker_load

    assert settings_of("") == (0, 0.0)
    assert settings_of("fanout: { max_viewers = 500; max_worker_load = 0.85 }") == (500, 0.85)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("max_viewers = -1", "max_viewers must not be negative"),
        ("max_worker_load = 85", r"max_worker_load must be a fraction of the workers' time between 0 and 1 \(e.g. 0.85\), not 85"),
        ('max_worker_load = "high"', "max_worker_load must be a number"),
    ],
)
def test_bad_limits_are_refused(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_settings(parse(f"fanout: {{ {setting} }}", "janus.jcfg"), None, None, detect_ips=lambda: ["192.0.2.7"])
