"""The Prometheus endpoint: ``GET /metrics`` in Prometheus's text format, on its own address and port
(``fanout.metrics_port``, ``fanout.metrics_interface`` in janus.jcfg; default 127.0.0.1)."""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from fanout.transports.listeners import Listener, serve

logger = logging.getLogger(__name__)


class MetricsEndpoint:
    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.listener = Listener(host, port)
        self.port: int | None = None
        self.app = web.Application()
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        serving = await serve(self.app, [self.listener])
        self._runner, self.port = serving.runner, serving.port
        logger.info("Prometheus metrics at http://%s:%d/metrics", self.listener.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
