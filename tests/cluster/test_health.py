"""Redis down or answering garbage: one log line per change of state, every failure counted."""

import logging

import pytest
from redis.exceptions import ConnectionError, InvalidResponse

from fanout.cluster.records import ForgedRecord
from fanout.cluster.registry import RegistryHealth


def test_one_line_per_change_of_state_and_every_failure_counted(caplog: pytest.LogCaptureFixture) -> None:
    health = RegistryHealth("redis://127.0.0.1:6379")
    caplog.set_level(logging.INFO, logger="fanout.cluster.registry")
    health.succeeded()
    for _ in range(3):
        health.failed(ConnectionError("Connection refused"))
    health.failed(InvalidResponse("Protocol Error: b'H'"))
    health.succeeded()
    health.succeeded()
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3, messages
    assert "reached" in messages[0]
    assert "fails (ConnectionError: Connection refused); serving viewers locally" in messages[1]
    assert "answers again" in messages[2]
    assert health.failures == {"ConnectionError": 3, "InvalidResponse": 1}
    assert health.up is True


def test_refused_records_are_counted_each_time_and_logged_once_per_key(caplog: pytest.LogCaptureFixture) -> None:
    health = RegistryHealth("redis://127.0.0.1:6379")
    forged = ForgedRecord("its signature does not match this node's cluster secret")
    for _ in range(3):
        health.saw_refused({"fanout:fanout:node:intruder": forged})
    assert health.refused["forged"] == 3
    assert [record.getMessage() for record in caplog.records] == [
        "cluster: ignoring fanout:fanout:node:intruder in the registry: its signature does not match this node's cluster secret"
    ]
