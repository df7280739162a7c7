"""What each node writes in Redis, signed with the cluster secret (sans-IO).

Two kinds of record, each under a key that expires (the node's TTL) unless the
node writes it again at its next heartbeat:

- ``fanout:<cluster>:node:<name>``: a :class:`NodeRecord` (addresses, load, the
  mountpoints it serves viewers of);
- ``fanout:<cluster>:mountpoint:<origin>:<id>``: a :class:`MountpointRecord`, a
  mountpoint ingested by ``origin``, as the ``.jcfg`` entry that persistence.py
  writes (one format, parsed and checked by config.py on the reader's side).

A record is ``{"body": "<JSON text>", "mac": "<hex>"}``: the mac is an
HMAC-SHA256 of the body with a key derived from the cluster secret, so a node
that does not know the secret cannot place itself or a mountpoint in the
cluster. A reader refuses a record whose mac is wrong (:class:`ForgedRecord`)
or that does not parse (:class:`MalformedRecord`), and one whose body names
another node than its key (a record copied under another name).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fanout.config.jcfg import ConfigError, dumps, parse
from fanout.plugins.streaming.config import MountpointConfig, MountpointConfigError, parse_mountpoint
from fanout.plugins.streaming.persistence import mountpoint_settings

KEY_LABEL = b"fanout cluster registry v1"
RECORD_LIMIT = 64 * 1024  # bytes: a record longer than this is refused unread


class RecordError(ValueError):
    """A record read from Redis is refused; the message says why."""

    reason = "malformed"


class MalformedRecord(RecordError):
    reason = "malformed"


class ForgedRecord(RecordError):
    """The record's mac does not match: written by a node with another secret, or altered."""

    reason = "forged"


def registry_key(secret: str) -> bytes:
    """The key records are signed with, derived from the cluster secret (never the secret itself)."""
    return hmac.new(secret.encode(), KEY_LABEL, hashlib.sha256).digest()


def sign(key: bytes, body: dict[str, Any]) -> bytes:
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    mac = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"body": text, "mac": mac}, separators=(",", ":")).encode()


def verified_body(key: bytes, data: bytes | str) -> dict[str, Any]:
    """The body of a signed record; MalformedRecord or ForgedRecord if it cannot be trusted."""
    if not isinstance(data, bytes | str):  # a broken registry's reply of another kind
        raise MalformedRecord(f"not a string but {type(data).__name__}")
    if len(data) > RECORD_LIMIT:
        raise MalformedRecord(f"longer than {RECORD_LIMIT} bytes")
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRecord("not JSON") from None
    if not isinstance(record, dict) or not isinstance(record.get("body"), str) or not isinstance(record.get("mac"), str):
        raise MalformedRecord("not a signed record (body and mac)")
    expected = hmac.new(key, record["body"].encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, record["mac"]):
        raise ForgedRecord("its signature does not match this node's cluster secret")
    try:
        body = json.loads(record["body"])
    except ValueError:
        raise MalformedRecord("signed body is not JSON") from None
    if not isinstance(body, dict):
        raise MalformedRecord("signed body is not an object")
    return body


@dataclass(frozen=True)
class NodeLoad:
    viewers: int  # peers the engine serves
    sent_gbps: float  # what the engine sent over the last heartbeat, Gbit/s
    worker_busy: float  # 0..1: the workers' mean busy fraction over the last heartbeat
    load: float  # 0..1: the figure placement compares (the larger of worker_busy and viewers / max_viewers)


@dataclass(frozen=True)
class NodeRecord:
    name: str
    public_url: str  # the HTTP transport, as viewers reach it
    janus_url: str  # the Janus API over HTTP (public_url + base path)
    websocket_url: str | None  # the Janus API over WebSocket, if served
    relay_address: str  # the IP address its relays are sent from and received on
    webrtc_address: str  # "ip:port" of its WebRTC endpoint, where an edge's relay connects
    accept_viewers: bool
    max_load: float
    load: NodeLoad
    watched: tuple[str, ...] = ()  # ids (as text) of the mountpoints it serves viewers of now
    instance: str = ""  # random, per process: two processes with one node name are told apart

    def to_body(self) -> dict[str, Any]:
        return {
            "kind": "node",
            "name": self.name,
            "public_url": self.public_url,
            "janus_url": self.janus_url,
            "websocket_url": self.websocket_url,
            "relay_address": self.relay_address,
            "webrtc_address": self.webrtc_address,
            "accept_viewers": self.accept_viewers,
            "max_load": self.max_load,
            "load": {
                "viewers": self.load.viewers,
                "sent_gbps": self.load.sent_gbps,
                "worker_busy": self.load.worker_busy,
                "load": self.load.load,
            },
            "watched": list(self.watched),
            "instance": self.instance,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> NodeRecord:
        try:
            if body["kind"] != "node":
                raise MalformedRecord("not a node record")
            load = body["load"]
            websocket_url = body["websocket_url"]
            record = cls(
                name=_text(body["name"]),
                public_url=_text(body["public_url"]),
                janus_url=_text(body["janus_url"]),
                websocket_url=None if websocket_url is None else _text(websocket_url),
                relay_address=_text(body["relay_address"]),
                webrtc_address=_text(body["webrtc_address"]),
                accept_viewers=_boolean(body["accept_viewers"]),
                max_load=_number(body["max_load"]),
                load=NodeLoad(
                    viewers=int(_number(load["viewers"])),
                    sent_gbps=_number(load["sent_gbps"]),
                    worker_busy=_number(load["worker_busy"]),
                    load=_number(load["load"]),
                ),
                watched=tuple(_text(mountpoint) for mountpoint in _list(body["watched"])),
                instance=_text(body["instance"]),
            )
        except (KeyError, TypeError) as error:
            raise MalformedRecord(f"a node record without a valid {error}") from None
        return record

    def as_json(self) -> dict[str, Any]:
        """As the Admin API's ``list_cluster_nodes`` shows it."""
        body = self.to_body()
        del body["kind"]
        return body


@dataclass(frozen=True)
class MountpointRecord:
    origin: str  # the node that ingests it
    name: str  # the .jcfg group's name
    jcfg: str  # the mountpoint's .jcfg entry, as persistence.py writes it

    @classmethod
    def of(cls, origin: str, config: MountpointConfig) -> MountpointRecord:
        """An rtsp mountpoint is described by the streams its server's DESCRIBE gave (an rtp entry):
        the edges need its streams, not its server."""
        if config.rtsp is not None:
            config = dataclasses.replace(config, rtsp=None)
        return cls(origin=origin, name=config.name, jcfg=dumps({config.name: mountpoint_settings(config)}))

    def to_body(self) -> dict[str, Any]:
        return {"kind": "mountpoint", "origin": self.origin, "name": self.name, "jcfg": self.jcfg}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> MountpointRecord:
        try:
            if body["kind"] != "mountpoint":
                raise MalformedRecord("not a mountpoint record")
            return cls(origin=_text(body["origin"]), name=_text(body["name"]), jcfg=_text(body["jcfg"]))
        except (KeyError, TypeError) as error:
            raise MalformedRecord(f"a mountpoint record without a valid {error}") from None

    def config(self, *, string_ids: bool) -> MountpointConfig:
        """The mountpoint, parsed and checked as a .jcfg entry is; MalformedRecord if it is not one."""
        try:
            root = parse(self.jcfg, f"mountpoint record of {self.origin}")
            group = root.get(self.name)
            if len(root) != 1 or not isinstance(group, Mapping):
                raise MalformedRecord(f"its .jcfg entry is not one group named {self.name!r}")
            config, _ = parse_mountpoint(self.name, group, string_ids=string_ids)
        except (ConfigError, MountpointConfigError) as error:
            raise MalformedRecord(f"its .jcfg entry is refused: {error}") from None
        return config


def _text(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 2048:
        raise TypeError("text")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list) or len(value) > 10_000:
        raise TypeError("list")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("boolean")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or value < 0:
        raise TypeError("number")
    return float(value)
