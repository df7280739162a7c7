"""fanout's Prometheus metrics: read from the core, the Streaming plugin and the engine at each scrape.

Per mountpoint (label ``mountpoint``, the mountpoint's id as text): viewers,
delivered packets and bits, source packets, drops, retransmissions, send
errors, and what the sources' ingest dropped or added (undecryptable SRTP,
SSRC collisions, H.264 parameter sets, skew drops, packets lost on the way in). Per engine worker (label ``worker``): viewers, busy seconds, source
packets, overruns. The core: sessions, handles, PeerConnections that came up
(the join latency histogram: from the request that began a PeerConnection to
WebRTC up), hangups by reason, DTLS handshake failures. The event handlers:
events sent, dropped (queue full) and failed (retries exhausted). The Janus and
Admin APIs' connections closed for a limit (label ``limit``). New viewers refused
by admission control (label ``limit``). The viewers' bandwidth estimates and simulcast
substreams as gauge histograms (buckets, not a series per viewer) and the layer moves
the estimates made (label ``direction``). Engine keys
are read defensively: a key the engine does not report is left out. In a
cluster, the cluster's own metrics (registry, placements) are added and every
sample carries the node's name (label ``node``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fanout.transports.listeners import CONNECTION_COUNTERS
from fanout.webrtc.endpoint import WebRtcEndpoint

if TYPE_CHECKING:
    from fanout.cluster.node import ClusterNode
    from fanout.core.gateway import Gateway
    from fanout.core.handle import Handle

JOIN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# The viewers' bandwidth estimates, bits per second (one series per bucket, never one per viewer).
ESTIMATE_BUCKETS = (150e3, 300e3, 600e3, 1e6, 2e6, 3e6, 5e6, 10e6, 20e6)
DTLS_FAILURES = ("DTLS handshake failed", "DTLS alert")

MOUNTPOINT_COUNTERS = (
    # MountpointStats attribute, metric, help, scale
    ("sent_packets", "fanout_delivered_packets", "RTP packets sent to the mountpoint's viewers (retransmissions included)", 1),
    ("sent_bytes", "fanout_delivered_bits", "SRTP bits sent to the mountpoint's viewers", 8),
    ("packets", "fanout_source_packets", "RTP packets received from the mountpoint's sources", 1),
    ("malformed", "fanout_source_malformed", "datagrams from the sources that were not RTP", 1),
    ("dropped", "fanout_dropped_packets", "packets not sent to viewers (socket buffer full, send error)", 1),
    ("dropped_late", "fanout_dropped_late_packets", "packets not sent to viewers because they could not leave within max_send_delay_ms of arrival", 1),
    ("retransmissions", "fanout_retransmissions", "packets sent again after a NACK", 1),
    ("send_errors", "fanout_send_errors", "send system calls that failed", 1),
)
SOURCE_STREAM_COUNTERS = (
    # StreamStats attributes, summed over the mountpoint's streams
    ("undecryptable", "fanout_source_undecryptable", "SRTP packets from the sources that failed authentication or replay checks"),
    ("collisions", "fanout_source_collisions", "source packets dropped because another SSRC holds the stream"),
    ("wrong_payload_type", "fanout_source_wrong_payload_type", "source packets dropped for a payload type the stream does not take"),
    ("parameter_sets_inserted", "fanout_h264_parameter_sets_inserted", "H.264 SPS/PPS packets put before keyframes that lacked them"),
    ("skew_dropped", "fanout_skew_dropped_packets", "audio packets dropped to pull a fast source clock back in line"),
    ("lost", "fanout_source_lost_packets", "packets the sources sent that never reached fanout (their sequence gaps)"),
)
WORKER_COUNTERS = (
    ("busy_ns", "fanout_worker_busy_seconds", "time the worker spent working rather than waiting", 1e-9),
    ("source_packets", "fanout_worker_source_packets", "source packets the worker fanned out", 1),
    ("messages", "fanout_worker_messages", "messages the worker handed to the kernel", 1),
    ("overruns", "fanout_worker_overruns", "source packets lost because the worker's ring was full", 1),
    ("dropped_late", "fanout_worker_dropped_late", "packets to the worker's viewers not sent within max_send_delay_ms of arrival", 1),
)


class CoreMetrics:
    """The counters the core feeds as things happen (a :class:`~fanout.core.gateway.GatewayListener`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.join_latency = Histogram(
            "fanout_join_latency_seconds",
            "from the request that began a PeerConnection to WebRTC up (ICE and DTLS done)",
            buckets=JOIN_BUCKETS,
            registry=registry,
        )
        self.webrtc_ups = Counter("fanout_webrtc_up", "PeerConnections that came up", registry=registry)
        self.hangups = Counter("fanout_hangups", "PeerConnections that ended, by reason", ["reason"], registry=registry)
        self.dtls_failures = Counter(
            "fanout_dtls_handshake_failures", "PeerConnections whose DTLS handshake failed or was refused", registry=registry
        )

    def webrtc_up(self, handle: Handle, join_seconds: float | None) -> None:
        self.webrtc_ups.inc()
        if join_seconds is not None:
            self.join_latency.observe(join_seconds)

    def webrtc_hangup(self, handle: Handle, reason: str) -> None:
        self.hangups.labels(reason=reason or "unknown").inc()
        if reason.startswith(DTLS_FAILURES):
            self.dtls_failures.inc()


class StateCollector(Collector):
    """What is read at each scrape: the core's sessions, the plugin's mountpoints, the engine."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gateway = self.gateway
        yield _gauge("fanout_sessions", "Janus API sessions", len(gateway.sessions))
        yield _gauge("fanout_handles", "plugin handles", len(gateway.handles))
        peers = sum(1 for handle in gateway.handles.values() if handle.media_keys is not None)
        yield _gauge("fanout_peerconnections", "handles whose PeerConnection is up", peers)
        yield self._peerconnections_by_route()
        yield from self._ice_tcp()
        yield _gauge("fanout_accepting_new_sessions", "1 if new sessions are accepted", int(gateway.accepting_new_sessions))
        yield from self._mountpoints()
        yield from self._workers()
        yield from self._event_handlers()
        yield _connections_closed_by_limits()
        yield from self._admission()
        yield from self._webrtc_socket()
        yield from self._adaptation()

    def _webrtc_socket(self) -> Iterable[Metric]:
        endpoint = self.gateway.endpoint
        if not isinstance(endpoint, WebRtcEndpoint):  # a test's stand-in has no socket
            return
        yield _gauge(
            "fanout_webrtc_receive_buffer_bytes", "the WebRTC socket's receive buffer, as the kernel granted it", endpoint.receive_buffer
        )
        drops = endpoint.socket_drops()
        if drops is not None:
            yield CounterMetricFamily(
                "fanout_webrtc_socket_drops", "datagrams the kernel dropped at the WebRTC socket: its receive buffer was full", value=drops
            )
        read = self.gateway.engine.webrtc_socket_stats()
        datagrams = CounterMetricFamily(
            "fanout_webrtc_socket_datagrams",
            "datagrams the engine read on the WebRTC socket, by fate: viewers' RTCP read (or refused) in the engine, "
            "forwarded to the control plane (STUN, DTLS), dropped (too large, or the control plane's queue full)",
            labels=["fate"],
        )
        for fate in ("rtcp_read", "rtcp_refused", "forwarded", "dropped"):
            datagrams.add_metric([fate], getattr(read, fate))
        yield datagrams

    def _adaptation(self) -> Iterable[Metric]:
        """The viewers' bandwidth estimates and simulcast layers now, as gauge histograms, the
        layer moves their estimates made, and how many cannot keep up with what they get."""
        estimates: list[int] = []
        substreams: list[int] = []
        behind = 0
        moves = CounterMetricFamily(
            "fanout_layer_moves",
            "simulcast substreams and temporal layers viewers were moved to by their bandwidth estimate",
            labels=["direction"],
        )  # fmt: skip
        for plugin in self.gateway.plugins.values():
            for viewer in getattr(plugin, "viewers", {}).values():
                if viewer.mountpoint is None:
                    continue
                if viewer.estimate is not None:
                    estimates.append(viewer.estimate)
                behind += viewer.keeping_up.behind
                substreams += [t.substream for t in viewer.tracks if t.stream.simulcast and t.substream is not None]
            for direction, count in getattr(plugin, "layer_moves", {}).items():
                moves.add_metric([direction], count)
        yield _gauge_histogram("fanout_viewer_estimate_bits", "the viewers' bandwidth estimates (bits per second)",
                               estimates, ESTIMATE_BUCKETS)  # fmt: skip
        yield _gauge_histogram("fanout_viewer_substream", "the simulcast substream each viewer's video track takes",
                               substreams, (0, 1, 2))  # fmt: skip
        yield moves
        yield _gauge("fanout_viewers_behind",
                     "viewers whose bandwidth estimate stays under the bitrate of what they get: they cannot keep up",
                     behind)  # fmt: skip

    def _admission(self) -> Iterable[Metric]:
        """New viewers refused by admission control, per limit (``max_viewers``, ``max_worker_load``)."""
        refused = CounterMetricFamily(
            "fanout_viewers_refused", "new viewers refused because the node was past a configured load", labels=["limit"]
        )
        for plugin in self.gateway.plugins.values():
            admission = getattr(plugin, "admission", None)
            if admission is not None:
                for limit, count in admission.refused.items():
                    refused.add_metric([limit], count)
                yield _gauge("fanout_worker_load", "the engine workers' mean busy fraction (sampled with max_worker_load)", admission.worker_load)
        yield refused

    def _ice_tcp(self) -> Iterable[Metric]:
        """The ICE-TCP port: connections open, and those closed before or instead of carrying a viewer."""
        endpoint = self.gateway.endpoint
        if not endpoint.ice_tcp:
            return
        yield _gauge("fanout_ice_tcp_connections", "ICE-TCP connections open", endpoint.tcp_connections)
        yield CounterMetricFamily("fanout_ice_tcp_accepted", "ICE-TCP connections accepted", value=endpoint.tcp_accepted)
        refused = CounterMetricFamily(
            "fanout_ice_tcp_refused",
            "ICE-TCP connections closed by fanout for what they sent or failed to send, by reason",
            labels=["reason"],
        )
        for reason, count in (
            ("not_stun", endpoint.tcp_rejected),
            ("bad_framing", endpoint.tcp_malformed),
            ("setup_timeout", endpoint.tcp_setup_timeouts),
            ("evicted", endpoint.tcp_evicted),
            ("write_failed", endpoint.tcp_write_failures),
        ):
            refused.add_metric([reason], count)
        yield refused

    def _peerconnections_by_route(self) -> Metric:
        from fanout.core.gateway import address_family

        counts = {(transport, family): 0 for transport in ("udp", "tcp") for family in ("ipv4", "ipv6")}
        endpoint = self.gateway.endpoint
        for handle in self.gateway.handles.values():
            peer = handle.peer
            if handle.media_keys is not None and peer is not None and peer.address is not None:
                counts[endpoint.transport_of(peer.address), address_family(peer.address[0])] += 1
        family = GaugeMetricFamily(
            "fanout_peerconnections_by_route",
            "PeerConnections that are up, by the viewer's transport and address family",
            labels=["transport", "family"],
        )
        for (transport, address_family_name), count in counts.items():
            family.add_metric([transport, address_family_name], count)
        return family

    def _mountpoints(self) -> Iterable[Metric]:
        viewers = GaugeMetricFamily("fanout_viewers", "viewers the engine serves, per mountpoint", labels=["mountpoint"])
        counters = {
            key: CounterMetricFamily(name, text, labels=["mountpoint"]) for key, name, text, _ in MOUNTPOINT_COUNTERS
        }
        scales = {key: scale for key, _, _, scale in MOUNTPOINT_COUNTERS}
        stream_counters = {
            key: CounterMetricFamily(name, text, labels=["mountpoint"]) for key, name, text in SOURCE_STREAM_COUNTERS
        }
        for mountpoint_id, engine_id in self._mountpoint_ids():
            try:
                stats = self.gateway.engine.mountpoint_stats(engine_id)
            except (KeyError, RuntimeError):
                continue
            label = [str(mountpoint_id)]
            viewers.add_metric(label, stats.viewers)
            for key, family in counters.items():
                family.add_metric(label, getattr(stats, key) * scales[key])
            streams = stats.streams
            for key, family in stream_counters.items():
                family.add_metric(label, sum(getattr(stream, key) for stream in streams))
        yield viewers
        yield from counters.values()
        yield from stream_counters.values()

    def _mountpoint_ids(self) -> list[tuple[Any, int]]:
        ids = []
        for plugin in self.gateway.plugins.values():
            for mountpoint_id, mountpoint in getattr(plugin, "mountpoints", {}).items():
                ids.append((mountpoint_id, getattr(mountpoint, "engine_id", mountpoint_id)))
        return ids

    def _workers(self) -> Iterable[Metric]:
        try:
            workers = list(self.gateway.engine.worker_stats())
        except (AttributeError, RuntimeError):
            return
        viewers = GaugeMetricFamily("fanout_worker_viewers", "viewers each engine worker serves", labels=["worker"])
        counters = {key: CounterMetricFamily(name, text, labels=["worker"]) for key, name, text, _ in WORKER_COUNTERS}
        scales = {key: scale for key, _, _, scale in WORKER_COUNTERS}
        for worker in workers:
            label = [str(worker.index)]
            viewers.add_metric(label, worker.viewers)
            for key, family in counters.items():
                family.add_metric(label, getattr(worker, key) * scales[key])
        yield viewers
        yield from counters.values()

    def _event_handlers(self) -> Iterable[Metric]:
        families = {
            key: CounterMetricFamily(f"fanout_events_{key}", text, labels=["handler"])
            for key, text in (
                ("sent", "events delivered to the event handler's backend"),
                ("dropped", "events dropped because the handler's queue was full"),
                ("failed", "events given up after the retries"),
            )
        }
        queued = GaugeMetricFamily("fanout_events_queued", "events waiting in the handler's queue", labels=["handler"])
        for handler in self.gateway.event_bus.handlers:
            stats = handler.stats()
            for key, family in families.items():
                family.add_metric([handler.package], stats.get(key, 0))
            queued.add_metric([handler.package], stats.get("queued", 0))
        yield from families.values()
        yield queued


def _connections_closed_by_limits() -> CounterMetricFamily:
    closed = CounterMetricFamily(
        "fanout_connections_closed_by_limit",
        "Janus and Admin API connections (HTTP, WebSocket) closed for a limit, by limit",
        labels=["limit"],
    )
    for limit, count in dataclasses.asdict(CONNECTION_COUNTERS).items():
        closed.add_metric([limit], count)
    return closed


def _gauge_histogram(name: str, text: str, values: list[int], bounds: tuple[float, ...]) -> GaugeHistogramMetricFamily:
    """``values`` now, counted in cumulative buckets (``le``) with their sum."""
    buckets = [(f"{bound:.0f}", sum(1 for value in values if value <= bound)) for bound in bounds]
    return GaugeHistogramMetricFamily(name, text, buckets=[*buckets, ("+Inf", len(values))], gsum_value=sum(values))


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


class NodeLabelledRegistry(CollectorRegistry):
    """A registry whose every sample carries ``node="<name>"`` (a cluster node's metrics)."""

    def __init__(self, node: str) -> None:
        super().__init__(auto_describe=False)
        self.node = node

    def collect(self) -> Iterator[Metric]:
        for metric in super().collect():
            metric.samples = [sample._replace(labels={**sample.labels, "node": self.node}) for sample in metric.samples]
            yield metric


def make_registry(gateway: Gateway, cluster: ClusterNode | None = None) -> tuple[CollectorRegistry, CoreMetrics]:
    """A registry with fanout's metrics; the CoreMetrics listens to the gateway."""
    registry = CollectorRegistry(auto_describe=False) if cluster is None else NodeLabelledRegistry(cluster.name)
    core = CoreMetrics(registry)
    registry.register(StateCollector(gateway))
    if cluster is not None:
        registry.register(cluster)
    gateway.listeners.append(core)
    return registry, core
