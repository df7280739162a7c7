"""Records in the registry: signed with the cluster secret, checked by readers."""

import json

import pytest

from fanout.cluster.records import (
    ForgedRecord,
    MalformedRecord,
    MountpointRecord,
    NodeLoad,
    NodeRecord,
    registry_key,
    sign,
    verified_body,
)
from fanout.config.jcfg import Group, parse
from fanout.plugins.streaming.config import parse_mountpoint

KEY = registry_key("sixteen-chars-ok")

NODE = NodeRecord(
    name="edge-1",
    public_url="http://127.0.0.3:8088",
    janus_url="http://127.0.0.3:8088/janus",
    websocket_url=None,
    relay_address="127.0.0.3",
    webrtc_address="127.0.0.3:10000",
    accept_viewers=True,
    max_load=0.8,
    load=NodeLoad(viewers=12, sent_gbps=0.024, worker_busy=0.1, load=0.1),
    watched=("1",),
)

MOUNTPOINT_JCFG = """
town-hall: {
	type = "rtp"
	id = 7
	description = "town hall"
	pin = "1234"
	media = (
		{ type = "audio", mid = "a", port = 5002, pt = 111, codec = "opus" },
		{ type = "video", mid = "v", port = 5004, pt = 100, codec = "h264", fmtp = "profile-level-id=42e01f;packetization-mode=1", simulcast = true, port2 = 5006, port3 = 5008 }
	)
}
"""


def test_a_node_record_reads_back_as_written() -> None:
    assert NodeRecord.from_body(verified_body(KEY, sign(KEY, NODE.to_body()))) == NODE


def test_a_mountpoint_travels_as_its_jcfg_entry_and_parses_to_the_same_config() -> None:
    group = parse(MOUNTPOINT_JCFG)["town-hall"]
    assert isinstance(group, Group)
    config, _ = parse_mountpoint("town-hall", group)
    record = MountpointRecord.of("origin", config)
    read = MountpointRecord.from_body(verified_body(KEY, sign(KEY, record.to_body())))
    assert read == record
    assert read.config(string_ids=False) == config
    assert "port2 = 5006" in read.jcfg  # simulcast, codec, fmtp: what persistence.py writes


def test_a_record_signed_with_another_secret_is_forged() -> None:
    data = sign(registry_key("another-secret-16"), NODE.to_body())
    with pytest.raises(ForgedRecord, match="does not match this node's cluster secret"):
        verified_body(KEY, data)


def test_an_altered_record_is_forged() -> None:
    record = json.loads(sign(KEY, NODE.to_body()))
    record["body"] = record["body"].replace('"viewers":12', '"viewers":0')
    with pytest.raises(ForgedRecord):
        verified_body(KEY, json.dumps(record).encode())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\x00garbage", "not JSON"),
        (b"[1, 2]", "not a signed record"),
        (b'{"body": 3, "mac": "00"}', "not a signed record"),
        (b"x" * 70000, "longer than"),
    ],
)
def test_garbage_is_malformed(data: bytes, message: str) -> None:
    with pytest.raises(MalformedRecord, match=message):
        verified_body(KEY, data)


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "mountpoint"},
        {"name": 3},
        {"load": {"viewers": -1, "sent_gbps": 0, "worker_busy": 0, "load": 0}},
        {"max_load": float("nan")},
        {"accept_viewers": "yes"},
        {"watched": "1"},
    ],
)
def test_a_signed_node_record_with_wrong_fields_is_malformed(change: dict[str, object]) -> None:
    body = NODE.to_body() | change
    with pytest.raises(MalformedRecord):
        NodeRecord.from_body(verified_body(KEY, sign(KEY, body)))


def test_a_signed_mountpoint_record_that_is_not_a_valid_mountpoint_is_malformed() -> None:
    record = MountpointRecord(origin="origin", name="bad", jcfg='bad: { type = "rtp"; id = 1; media = () }')
    with pytest.raises(MalformedRecord, match="'media' must be a non-empty list"):
        record.config(string_ids=False)
    with pytest.raises(MalformedRecord, match="not one group named 'bad'"):
        MountpointRecord(origin="origin", name="bad", jcfg="other: { }").config(string_ids=False)
    with pytest.raises(MalformedRecord, match="refused"):
        MountpointRecord(origin="origin", name="bad", jcfg="bad: {").config(string_ids=False)
