"""How fast the control plane answers while the media path is loaded: a probe in a process of its own.

The overload bench runs a :class:`ControlProbe` through each level's
measurement window, and on under the level's load until each request has
answered the number asked for (``--control-samples``: a p99 of a few answers
would be their maximum). It asks the server, in turn, a Janus ``ping``, a
Streaming ``info`` on the bench's mountpoint (over a session and handle of its
own) and an Admin API ``get_status``, each over a kept-alive HTTP connection,
one request at a time (the next one :data:`INTERVAL` after the last one
started, or when the last one answered if it took longer: the probe never
queues behind itself nor catches up after a slow answer), and times each
from the request's first byte to the answer's last. It runs in a child
process so that the bench's own event loop (hundreds of viewers' consent
checks and keepalives) adds nothing to the times; a request that fails or
takes over :data:`TIMEOUT` seconds is counted as failed and its time left out.
"""

from __future__ import annotations

import http.client
import json
import math
import multiprocessing
import os
import random
import time
from multiprocessing.connection import Connection
from typing import Any

REQUESTS = ("ping", "info", "get_status")
INTERVAL = 0.05  # seconds from one request's start to the next one's (at the earliest)
TIMEOUT = 5.0
KEEPALIVE_INTERVAL = 15.0  # between windows, the probe's session is kept alive


class JanusHttp:
    """Blocking Janus API and Admin API requests over two kept-alive connections."""

    def __init__(self, port: int, admin_port: int, admin_secret: str, mountpoint: int) -> None:
        self.api = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        self.admin = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=TIMEOUT)
        self.admin_secret = admin_secret
        self.mountpoint = mountpoint
        self.session_path = self.handle_path = ""

    def _post(self, connection: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": f"{random.getrandbits(48):x}"}
        try:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            connection.close()  # reconnects on the next request
            raise
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}")
        reply: dict[str, Any] = json.loads(data)
        return reply

    def open_handle(self) -> None:
        session = self._post(self.api, "/janus", {"janus": "create"})["data"]["id"]
        handle = self._post(self.api, f"/janus/{session}", {"janus": "attach", "plugin": "janus.plugin.streaming"})
        self.session_path = f"/janus/{session}"
        self.handle_path = f"/janus/{session}/{handle['data']['id']}"

    def keepalive(self) -> None:
        self._post(self.api, self.session_path, {"janus": "keepalive"})

    def ask(self, request: str) -> None:
        """One request; raises if it failed."""
        if request == "ping":
            reply = self._post(self.api, "/janus", {"janus": "ping"})
            ok = reply.get("janus") == "pong"
        elif request == "info":
            body = {"request": "info", "id": self.mountpoint}
            reply = self._post(self.api, self.handle_path, {"janus": "message", "body": body})
            ok = reply.get("plugindata", {}).get("data", {}).get("streaming") == "info"
        else:
            reply = self._post(self.admin, "/admin", {"janus": "get_status", "admin_secret": self.admin_secret})
            ok = reply.get("janus") == "success"
        if not ok:
            raise RuntimeError(f"{request}: {str(reply)[:200]}")


def _probe_main(connection: Connection, port: int, admin_port: int, admin_secret: str, mountpoint: int) -> None:
    try:
        os.nice(-5)  # as the sample viewers: the load's core is shared with the viewers
    except OSError:
        pass
    client = JanusHttp(port, admin_port, admin_secret, mountpoint)
    client.open_handle()
    connection.send("ready")
    times: dict[str, list[float]] = {name: [] for name in REQUESTS}
    failed: dict[str, int] = {name: 0 for name in REQUESTS}
    running = False
    turn = 0
    next_at = time.monotonic()
    while True:
        wait = max(0.0, next_at - time.monotonic()) if running else KEEPALIVE_INTERVAL
        if connection.poll(wait):
            command = connection.recv()
            if command == "start":
                times = {name: [] for name in REQUESTS}
                failed = {name: 0 for name in REQUESTS}
                running, next_at = True, time.monotonic()
            elif command == "stop":
                running = False
                connection.send({"times_ms": times, "failed": failed})
            elif command == "count":
                connection.send({name: (len(times[name]), failed[name]) for name in REQUESTS})
            elif command == "quit":
                return
            continue
        if not running:
            try:
                client.keepalive()
            except Exception:  # noqa: BLE001 - the next window's requests will say so
                pass
            continue
        request = REQUESTS[turn % len(REQUESTS)]
        turn += 1
        start = time.perf_counter()
        try:
            client.ask(request)
        except Exception:  # noqa: BLE001 - a failed request is what the probe counts
            failed[request] += 1
        else:
            times[request].append(1000 * (time.perf_counter() - start))
        # After a slow answer the next request goes at once, not a burst to catch up the missed turns.
        next_at = max(next_at + INTERVAL, time.monotonic())


class ControlProbe:
    """The probe's process; :meth:`start` and :meth:`stop` bracket one measurement window."""

    def __init__(self, port: int, admin_port: int, admin_secret: str, mountpoint: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=_probe_main, args=(child, port, admin_port, admin_secret, mountpoint), daemon=True
        )
        self._process.start()
        if not self._connection.poll(30) or self._connection.recv() != "ready":
            self.close()
            raise RuntimeError("the control-plane probe could not open its session")

    def start(self) -> None:
        self._connection.send("start")

    def counts(self) -> dict[str, tuple[int, int]]:
        """Each request's (answered, failed) since :meth:`start`; blocks while a request is in flight."""
        self._connection.send("count")
        if not self._connection.poll(TIMEOUT + 10):
            raise RuntimeError("the control-plane probe did not answer")
        counts: dict[str, tuple[int, int]] = self._connection.recv()
        return counts

    def stop(self) -> dict[str, Any]:
        """The window's response times (ms) and failures per request, with p50/p99."""
        self._connection.send("stop")
        if not self._connection.poll(TIMEOUT + 10):
            raise RuntimeError("the control-plane probe did not answer")
        window: dict[str, Any] = self._connection.recv()
        return {
            name: {
                **percentiles(window["times_ms"][name]),
                "answered": len(window["times_ms"][name]),
                "failed": window["failed"][name],
                "times_ms": [round(value, 3) for value in window["times_ms"][name]],
            }
            for name in REQUESTS
        }

    def close(self) -> None:
        try:
            self._connection.send("quit")
        except OSError:
            pass
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()


def answers_missing(answered: dict[str, int], wanted: int) -> dict[str, int]:
    """How many more answers each request needs to have ``wanted`` (only the requests short of it)."""
    return {name: wanted - answered.get(name, 0) for name in REQUESTS if answered.get(name, 0) < wanted}


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p99 (nearest rank: of 100 answers the 99th, of fewer than 100 the largest) and max."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"p50": at(0.5), "p99": at(0.99), "max": ordered[-1]}
