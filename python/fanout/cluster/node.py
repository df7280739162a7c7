"""This node's life in the cluster: heartbeats, the cluster's view, relays, placement.

Every ``heartbeat_interval`` seconds the node measures its load, writes its
record and its mountpoints' to Redis (keys expiring after ``node_ttl``) and
reads the cluster back. A mountpoint ingested elsewhere becomes a local relay
mountpoint here (the same id, fed by its origin) when its description appears,
and goes when its description expires; a local mountpoint of the same id wins.
While Redis cannot be read, nothing is added or removed: current viewers keep
watching, and new viewers are served where they ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis.asyncio import Redis

from fanout.cluster.load import EngineReading, LoadMeter
from fanout.cluster.placement import REGISTRY_DOWN, Placement, place
from fanout.cluster.records import MountpointRecord, NodeRecord, RecordError, registry_key
from fanout.cluster.registry import REGISTRY_ERRORS, ClusterView, Registry, RegistryHealth
from fanout.cluster.remote import relay_mountpoint_config
from fanout.config.settings import ClusterSettings
from fanout.plugins.streaming.config import MountpointConfig, MountpointId

if TYPE_CHECKING:
    from fanout._engine import Engine
    from fanout.plugins.streaming.plugin import StreamingPlugin

logger = logging.getLogger(__name__)

WITHDRAW_TIMEOUT = 1.0  # seconds a stopping node waits for Redis to remove its keys


def redacted(url: str) -> str:
    """A Redis URL without its password, for the logs."""
    scheme, separator, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{separator}{'***@' if at else ''}{host}" if credentials or at else url


class ClusterNode:
    def __init__(
        self,
        settings: ClusterSettings,
        plugin: StreamingPlugin,
        engine: Engine,
        *,
        janus_url: str,
        webrtc_port: int,
        redis: Redis | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.node_name
        self.plugin = plugin
        self.engine = engine
        self.janus_url = janus_url
        self.instance = secrets.token_hex(8)
        host = f"[{settings.relay_address}]" if ":" in settings.relay_address else settings.relay_address
        self.webrtc_address = f"{host}:{webrtc_port}"
        timeout = max(0.2, settings.heartbeat_interval)
        self.redis = redis or Redis.from_url(  # RESP2: every Redis speaks it, no HELLO round trip (nor a warning) per connection
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False, protocol=2
        )
        self.health = RegistryHealth(redacted(settings.redis_url))
        self.registry = Registry(self.redis, settings.cluster_name, registry_key(settings.secret), settings.node_ttl)
        self.view = ClusterView()
        self.meter = LoadMeter(settings.max_viewers)
        self.record = self._own_record()
        self.relays: dict[MountpointId, MountpointRecord] = {}  # relay mountpoints made here, by id
        self.placements: Counter[tuple[str, str]] = Counter()  # (chosen node, reason) -> count
        self.refusals: Counter[str] = Counter()  # reason -> count
        self._placed_since_heartbeat: Counter[str] = Counter()  # node -> viewers sent there since the last read
        self._descriptions: dict[str, MountpointConfig] = {}  # parsed .jcfg entries, by their text
        self._said: set[str] = set()  # one-time log lines already written
        self._missing_since: dict[MountpointId, float] = {}  # relays whose description is not in the view
        self._foreign_records = 0  # heartbeats that replaced a record of this name written by another process
        self._task: asyncio.Task[None] | None = None
        plugin.remote_mountpoints = self.remote_mountpoints

    async def start(self) -> None:
        await self._heartbeat_guarded()
        self._task = asyncio.get_running_loop().create_task(self._beat())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.health.up:
            with contextlib.suppress(*REGISTRY_ERRORS):
                async with asyncio.timeout(WITHDRAW_TIMEOUT):
                    await self.registry.withdraw(self.name)
        with contextlib.suppress(*REGISTRY_ERRORS):
            await self.redis.aclose()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            await self._heartbeat_guarded()

    async def _heartbeat_guarded(self) -> None:
        try:
            await self.heartbeat()
        except Exception:  # a bug here must not stop the heartbeats, nor the node
            logger.exception("cluster: heartbeat failed")

    async def heartbeat(self) -> None:
        """Write this node's records, read the cluster's, and follow its mountpoints."""
        self.record = self._own_record()
        try:
            async with asyncio.timeout(self.settings.node_ttl):
                replaced = await self.registry.publish(self.record, self._own_mountpoints())
                view = await self.registry.read()
        except REGISTRY_ERRORS as error:
            self.health.failed(error)
            return
        self.health.succeeded()
        self.health.saw_refused(view.refused)
        if replaced is not None and replaced != self.instance:
            self._foreign_records += 1  # once after a restart within node_ttl; again: a second process
        if self._foreign_records >= 2:
            self._say_once("duplicate name", "cluster: another node writes its record under this node's name %s; "
                           "give each node its own cluster.node_name", self.name)  # fmt: skip
        self.view = view
        self._placed_since_heartbeat.clear()  # the records just read count them
        self._follow_mountpoints()

    # --- what this node says ------------------------------------------------

    def _own_record(self) -> NodeRecord:
        settings = self.settings
        return NodeRecord(
            name=self.name,
            public_url=settings.public_url,
            janus_url=self.janus_url,
            websocket_url=settings.websocket_url,
            relay_address=settings.relay_address,
            webrtc_address=self.webrtc_address,
            accept_viewers=settings.accept_viewers,
            max_load=settings.max_load,
            load=self.meter.update(self._engine_reading()),
            instance=self.instance,
            watched=tuple(sorted(str(mountpoint_id) for mountpoint_id, mountpoint in self.plugin.mountpoints.items()
                                 if mountpoint.viewers)),  # fmt: skip
        )

    def _engine_reading(self) -> EngineReading:
        workers = list(self.engine.worker_stats())
        sent = 0
        for mountpoint in list(self.plugin.mountpoints.values()):
            with contextlib.suppress(KeyError, RuntimeError):
                sent += self.engine.mountpoint_stats(mountpoint.engine_id).sent_bytes
        return EngineReading(
            at=time.monotonic(),
            viewers=sum(worker.viewers for worker in workers),
            busy_ns=tuple(worker.busy_ns for worker in workers),
            sent_bytes=sent,
        )

    def _own_mountpoints(self) -> dict[str, MountpointRecord]:
        """The mountpoints this node ingests (relay mountpoints are the origin's to describe)."""
        records = {}
        for mountpoint_id, mountpoint in self.plugin.mountpoints.items():
            if mountpoint_id in self.relays or mountpoint.config.relay is not None:
                continue
            try:
                records[str(mountpoint_id)] = MountpointRecord.of(self.name, mountpoint.config)
            except ValueError as error:  # a value the .jcfg cannot hold
                self._say_once(f"describe {mountpoint_id}", "cluster: mountpoint %s cannot be described: %s",
                               mountpoint_id, error)  # fmt: skip
        return records

    # --- the cluster's mountpoints ----------------------------------------------

    def remote_mountpoints(self) -> dict[MountpointId, tuple[MountpointConfig, str]]:
        """The mountpoints ingested on other nodes: id -> (description, origin)."""
        remote = {}
        for mountpoint_id, record in self.view.mountpoints.items():
            if record.origin == self.name:
                continue
            config = self._description(mountpoint_id, record)
            if config is not None:
                remote[config.id] = (config, record.origin)
        return remote

    def _description(self, mountpoint_id: str, record: MountpointRecord) -> MountpointConfig | None:
        config = self._descriptions.get(record.jcfg)
        if config is None:
            try:
                config = record.config(string_ids=self.plugin.settings.string_ids)
            except RecordError as error:
                self.health.refused[error.reason] += 1
                self._say_once(record.jcfg, "cluster: mountpoint %s of %s is refused: %s", mountpoint_id,
                               record.origin, error)  # fmt: skip
                return None
            if len(self._descriptions) > 1000:
                self._descriptions.clear()
            self._descriptions[record.jcfg] = config
        return config

    def _follow_mountpoints(self) -> None:
        """Relay mountpoints made for new descriptions, removed for the ones that expired."""
        plugin = self.plugin
        wanted = self.remote_mountpoints()
        now = time.monotonic()
        for mountpoint_id, made in list(self.relays.items()):
            description = self.view.mountpoints.get(str(mountpoint_id))
            if description == made:
                self._missing_since.pop(mountpoint_id, None)
                continue
            if mountpoint_id in wanted and description is not None and self._update_relay(mountpoint_id, description, *wanted[mountpoint_id]):
                continue
            # A missing description must stay away a whole TTL before the viewers are let go:
            # a Redis that came back empty is filled again by every node within a heartbeat.
            missing_since = self._missing_since.setdefault(mountpoint_id, now)
            if description is None and now - missing_since < self.settings.node_ttl:
                continue
            logger.info("cluster: mountpoint %s of %s is %s; its relay here closes", mountpoint_id, made.origin,
                        "gone from the cluster" if description is None else "another stream now")  # fmt: skip
            del self.relays[mountpoint_id]
            self._missing_since.pop(mountpoint_id, None)
            if mountpoint_id in plugin.mountpoints:
                plugin.remove_mountpoint(mountpoint_id)
        for mountpoint_id, (config, origin_name) in wanted.items():
            if mountpoint_id in self.relays:
                continue
            if mountpoint_id in plugin.mountpoints:
                self._say_once(f"local {mountpoint_id}", "cluster: mountpoint %s of %s has the id of a local one; "
                               "the local one is served here", mountpoint_id, origin_name)  # fmt: skip
                continue
            origin = self.view.nodes.get(origin_name)
            if origin is None:
                continue
            try:
                plugin.add_mountpoint(relay_mountpoint_config(config, origin))
            except Exception as error:  # the engine refused it: the node serves on without this relay
                self._say_once(f"relay {mountpoint_id}", "cluster: mountpoint %s of %s cannot be relayed here: %s: %s",
                               mountpoint_id, origin_name, type(error).__name__, error)  # fmt: skip
                continue
            self.relays[mountpoint_id] = self.view.mountpoints[str(mountpoint_id)]
            logger.info("cluster: mountpoint %s of %s is served here through a relay", mountpoint_id, origin_name)

    def _update_relay(
        self, mountpoint_id: MountpointId, description: MountpointRecord, config: MountpointConfig, origin_name: str
    ) -> bool:
        """An edit on the origin (description, metadata, pin) reaches the relay mountpoint in place,
        viewers kept; False when the streams or the origin changed (the relay must be made anew)."""
        mountpoint = self.plugin.mountpoints.get(mountpoint_id)
        origin = self.view.nodes.get(origin_name)
        if mountpoint is None or origin is None or mountpoint.config.relay is None:
            return False
        if origin_name != mountpoint.config.relay.origin_node or config.streams != mountpoint.config.streams:
            return False
        mountpoint.config = relay_mountpoint_config(config, origin)
        self.relays[mountpoint_id] = description
        self._missing_since.pop(mountpoint_id, None)
        return True

    def knows(self, mountpoint_id: str) -> bool:
        """Whether the mountpoint exists here or anywhere in the cluster."""
        local = {str(key) for key in self.plugin.mountpoints}
        return mountpoint_id in local or mountpoint_id in self.view.mountpoints

    # --- placement ------------------------------------------------------------------

    def nodes(self) -> list[NodeRecord]:
        """The cluster's nodes, this one as it is now."""
        others = [node for name, node in sorted(self.view.nodes.items()) if name != self.name]
        return [self.record, *others]

    def place(self, mountpoint_id: str, avoid: frozenset[str] = frozenset()) -> Placement | None:
        """The node for a new viewer of ``mountpoint_id`` (counted), not one of ``avoid`` (nodes the
        viewer just lost: they may still be in the view for a TTL); None: refused, every node is full."""
        if not self.health.up:
            placement: Placement | None = Placement(self.record, REGISTRY_DOWN)
        else:
            nodes = [node for node in self.nodes() if node.name not in avoid]
            placement = place(nodes, mountpoint_id, self.name, self._placed_since_heartbeat)
        if placement is None:
            self.refusals["full"] += 1
        else:
            self.placements[placement.node.name, placement.reason] += 1
            self._placed_since_heartbeat[placement.node.name] += 1
        return placement

    # --- operators -------------------------------------------------------------------

    def _say_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._said:
            self._said.add(key)
            logger.warning(message, *args)

    def collect(self) -> Iterator[Metric]:
        """The cluster's metrics (a prometheus_client collector's ``collect``)."""
        yield GaugeMetricFamily("fanout_cluster_registry_up", "1 while the registry (Redis) answers", value=int(bool(self.health.up)))
        failures = CounterMetricFamily("fanout_cluster_registry_failures", "calls to the registry that failed, by error", labels=["error"])
        for kind, count in sorted(self.health.failures.items()):
            failures.add_metric([kind], count)
        yield failures
        refused = CounterMetricFamily("fanout_cluster_records_refused", "registry records ignored (forged: wrong cluster secret; malformed)", labels=["reason"])
        for reason in ("forged", "malformed"):
            refused.add_metric([reason], self.health.refused[reason])
        yield refused
        yield GaugeMetricFamily("fanout_cluster_nodes", "nodes in the cluster view", value=len(self.nodes()))
        yield GaugeMetricFamily("fanout_cluster_load", "this node's load figure (0..1) as placement sees it", value=self.record.load.load)
        yield GaugeMetricFamily("fanout_cluster_relays", "mountpoints of other nodes served here through a relay", value=len(self.relays))
        placements = CounterMetricFamily("fanout_cluster_placements", "viewers placed by this node, by chosen node and reason", labels=["chosen", "reason"])
        for (chosen, reason), count in sorted(self.placements.items()):
            placements.add_metric([chosen, reason], count)
        yield placements
        refusals = CounterMetricFamily("fanout_cluster_placement_refusals", "viewers refused: every node full or taking none", labels=["reason"])
        refusals.add_metric(["full"], self.refusals["full"])
        yield refusals
