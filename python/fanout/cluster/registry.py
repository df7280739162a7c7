"""The cluster's registry in Redis (redis-py's asyncio client): heartbeats in, the cluster's view out.

At each heartbeat a node writes its :class:`~fanout.cluster.records.NodeRecord`
and the records of the mountpoints it ingests, each key expiring after the
node's TTL, then reads every node's and mountpoint's record back. A node that
stops (SIGKILL, a cable pulled) leaves the cluster when its keys expire; a node
that restarts writes them again at its first heartbeat.

Redis is a helper, never a dependency of the media: when it is down or answers
garbage, :class:`RegistryHealth` logs one line per change of state and counts
the failures, the node keeps the last view it read, and the next heartbeat that
succeeds heals everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from fanout.cluster.records import (
    MalformedRecord,
    MountpointRecord,
    NodeRecord,
    RecordError,
    sign,
    verified_body,
)

logger = logging.getLogger(__name__)


class UnexpectedReply(RedisError):
    """The registry answered with well-formed RESP of the wrong kind (an integer where a list or a
    string belongs): a broken peer, not a Redis."""


@contextlib.contextmanager
def expected_replies() -> Iterator[None]:
    """Around calls to the registry: a reply of the wrong kind fails redis-py's handling of it (and
    ours) with a TypeError or an AttributeError; it becomes an :class:`UnexpectedReply`."""
    try:
        yield
    except (TypeError, AttributeError, IndexError, KeyError) as error:
        raise UnexpectedReply(f"a reply of the wrong kind ({type(error).__name__}: {error})") from error


# What a failed call to Redis raises: its own errors (connection, timeout, a reply that is not
# RESP, an error reply, a reply of the wrong kind) and the socket's.
REGISTRY_ERRORS = (RedisError, OSError, asyncio.TimeoutError, ValueError)
SCAN_BATCH = 1000


@dataclass
class ClusterView:
    """What the registry held at the last successful read."""

    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    mountpoints: dict[str, MountpointRecord] = field(default_factory=dict)  # by mountpoint id (as text)
    refused: dict[str, RecordError] = field(default_factory=dict)  # Redis key -> why its record was refused


class RegistryHealth:
    """Whether Redis answers, said once per change in the log, with failures counted by kind."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.up: bool | None = None  # None: not tried yet
        self.failures: Counter[str] = Counter()  # kind (the exception's class name) -> count
        self.refused: Counter[str] = Counter()  # records refused, by reason ("forged", "malformed")
        self._refused_keys: set[str] = set()

    def succeeded(self) -> None:
        if self.up is not True:
            if self.up is False:
                logger.warning("cluster: the registry at %s answers again; the cluster view is live", self.where)
            else:
                logger.info("cluster: registry at %s reached", self.where)
        self.up = True

    def failed(self, error: BaseException) -> None:
        kind = type(error).__name__
        self.failures[kind] += 1
        if self.up is not False:
            logger.error(
                "cluster: the registry at %s fails (%s: %s); serving viewers locally with the last cluster view "
                "until it answers again",
                self.where, kind, error or "no answer in time",
            )  # fmt: skip
        self.up = False

    def saw_refused(self, refused: dict[str, RecordError]) -> None:
        """Count the refused records; log each key once while it stays refused."""
        for key, error in refused.items():
            self.refused[error.reason] += 1
            if key not in self._refused_keys:
                logger.warning("cluster: ignoring %s in the registry: %s", key, error)
        self._refused_keys = set(refused)


class Registry:
    """One node's reads and writes of the registry."""

    def __init__(self, redis: Redis, cluster_name: str, signing_key: bytes, ttl: float) -> None:
        self.redis = redis
        self.prefix = f"fanout:{cluster_name}"
        self.signing_key = signing_key
        self.ttl_ms = max(1, round(ttl * 1000))
        self._published_mountpoint_keys: set[str] = set()

    def node_key(self, name: str) -> str:
        return f"{self.prefix}:node:{name}"

    def mountpoint_key(self, origin: str, mountpoint_id: str) -> str:
        return f"{self.prefix}:mountpoint:{origin}:{mountpoint_id}"

    async def publish(self, node: NodeRecord, mountpoints: dict[str, MountpointRecord]) -> str | None:
        """One heartbeat: the node's record and its mountpoints', with the TTL; mountpoints it
        no longer has are removed. Returns the instance of the node record it replaced (None:
        none, or unreadable): another than the node's own means two processes share its name."""
        keys = {self.mountpoint_key(node.name, mountpoint_id): record for mountpoint_id, record in mountpoints.items()}
        pipeline = self.redis.pipeline(transaction=False)
        pipeline.set(self.node_key(node.name), sign(self.signing_key, node.to_body()), px=self.ttl_ms, get=True)
        for key, record in keys.items():
            pipeline.set(key, sign(self.signing_key, record.to_body()), px=self.ttl_ms)
        gone = self._published_mountpoint_keys - keys.keys()
        if gone:
            pipeline.delete(*gone)
        with expected_replies():
            replies = await pipeline.execute()
            replaced = replies[0]
        self._published_mountpoint_keys = set(keys)
        if not isinstance(replaced, bytes | str):
            return None
        try:
            return NodeRecord.from_body(verified_body(self.signing_key, replaced)).instance
        except RecordError:
            return None

    async def withdraw(self, name: str) -> None:
        """A node that stops leaves at once rather than after its TTL."""
        with expected_replies():
            await self.redis.delete(self.node_key(name), *self._published_mountpoint_keys)
        self._published_mountpoint_keys = set()

    async def read(self) -> ClusterView:
        view = ClusterView()
        with expected_replies():
            node_keys = await self._keys(f"{self.prefix}:node:*")
            mountpoint_keys = await self._keys(f"{self.prefix}:mountpoint:*")
            values = await self.redis.mget(node_keys + mountpoint_keys) if node_keys or mountpoint_keys else []
        if not isinstance(values, list):
            raise UnexpectedReply(f"MGET answered {type(values).__name__}, not a list")
        for key, value in zip(node_keys, values[: len(node_keys)], strict=True):
            if value is None:  # expired between SCAN and MGET
                continue
            try:
                node = NodeRecord.from_body(verified_body(self.signing_key, value))
                if self.node_key(node.name) != key:
                    raise _copied(key)
            except RecordError as error:
                view.refused[key] = error
                continue
            view.nodes[node.name] = node
        for key, value in sorted(zip(mountpoint_keys, values[len(node_keys) :], strict=True)):
            if value is None:
                continue
            origin, _, mountpoint_id = key.removeprefix(f"{self.prefix}:mountpoint:").partition(":")
            try:
                record = MountpointRecord.from_body(verified_body(self.signing_key, value))
                if record.origin != origin:
                    raise _copied(key)
            except RecordError as error:
                view.refused[key] = error
                continue
            if mountpoint_id in view.mountpoints:
                logger.debug("cluster: mountpoint %s is ingested by %s too; %s's wins", mountpoint_id, origin,
                             view.mountpoints[mountpoint_id].origin)  # fmt: skip
                continue
            view.mountpoints[mountpoint_id] = record
        return view

    async def _keys(self, pattern: str) -> list[str]:
        keys = [key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
                async for key in self.redis.scan_iter(match=pattern, count=SCAN_BATCH)]  # fmt: skip
        return sorted(set(keys))


def _copied(key: str) -> RecordError:
    return MalformedRecord(f"{key} holds a record written for another key")
