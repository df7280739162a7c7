"""Janus API scenarios: run against the real Janus to record its replies (record_janus.py),
and against fanout to compare (tests/core, tests/transports).

An *API scenario* is a sequence of requests, each made at the root, a session or a
handle; it runs over HTTP (ids in the path), over WebSocket or straight into the
Gateway (ids in the body). After each request the runner collects as many events
as the step says, then at the end any stray events. Results are masked (session
and handle ids, SDP, random transactions) so two servers' results compare as JSON.

A *raw HTTP scenario* sends exact bytes to exact paths and records status, the
headers Janus sets, and the body. A *raw WebSocket case* sends one text message
and records the replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

Message = dict[str, Any]
RECORDED_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Location",
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Vary",
    "Access-Control-Max-Age",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
)
STREAMING = "janus.plugin.streaming"
TOO_BIG = "18446744073709551616"


# ---------------------------------------------------------------------------
# Scenario definitions

def step(at: str, request: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"at": at, "request": request, **options}


def create(**options: Any) -> dict[str, Any]:
    return step("root", {"janus": "create", "transaction": "create"}, save={"session": "data.id"}, **options)


def attach(var: str = "handle", **options: Any) -> dict[str, Any]:
    return step("session", {"janus": "attach", "transaction": "attach", "plugin": STREAMING}, save={var: "data.id"}, **options)


def message(transaction: str, body: Any, at: str = "handle", *, mask_data: bool = False, events: int = 0, **fields: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"events": events}
    if mask_data:
        options["mask_data"] = True
    return step(at, {"janus": "message", "transaction": transaction, "body": body, **fields}, **options)


def watch(transaction: str = "watch", at: str = "handle") -> dict[str, Any]:
    return message(transaction, {"request": "watch", "id": 1}, at=at, events=1)


ANSWER_SDP_PLACEHOLDER = "{answer}"
STANDALONE_ANSWER = "\r\n".join([
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE a v",
    "a=msid-semantic: WMS",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 7F:2A:5F:54:81:5F:1D:83:CE:C8:F0:32:B4:6F:37:06:DF:5B:F9:DA:9A:82:39:69:67:5F:06:2F:C6:A5:B3:D5",
    "a=setup:active",
    "a=mid:a",
    "a=recvonly",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "m=video 9 UDP/TLS/RTP/SAVPF 100",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:abcdefghijklmnopqrstuvwx",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 7F:2A:5F:54:81:5F:1D:83:CE:C8:F0:32:B4:6F:37:06:DF:5B:F9:DA:9A:82:39:69:67:5F:06:2F:C6:A5:B3:D5",
    "a=setup:active",
    "a=mid:v",
    "a=recvonly",
    "a=rtcp-mux",
    "a=rtpmap:100 VP8/90000",
    "a=rtcp-fb:100 nack",
    "a=rtcp-fb:100 nack pli",
    "",
])

API_SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "root_requests": [
        step("root", {"janus": "ping", "transaction": "p"}),
        step("root", {"janus": "PiNg", "transaction": "p2"}),
        create(),
        step("root", {"janus": "CREATE", "transaction": "upper"}, save={"session2": "data.id"}),
        step("root", {"janus": "create", "transaction": ""}, save={"session3": "data.id"}),
        step("root", {"janus": "keepalive", "transaction": "k"}),
        step("root", {"janus": "attach", "transaction": "a", "plugin": STREAMING}),
        step("root", {"janus": "destroy", "transaction": "d"}),
        step("root", {"janus": "message", "transaction": "m", "body": {}}),
        step("root", {"janus": "foo", "transaction": "f"}),
        step("root", {"janus": "", "transaction": "e"}),
    ],
    "request_validation": [
        step("root", {}),
        step("root", {"janus": "create"}),
        step("root", {"transaction": "t"}),
        step("root", {"janus": 5, "transaction": "t"}),
        step("root", {"janus": "create", "transaction": 5}),
        step("root", {"janus": None, "transaction": "t"}),
        step("root", {"janus": "create", "transaction": None}),
        step("root", {"janus": ["create"], "transaction": "t"}),
        step("root", {"janus": "create", "transaction": {"a": 1}}),
        step("root", {"janus": "keepalive", "transaction": "s1", "session_id": "abc"}),
        step("root", {"janus": "keepalive", "transaction": "s2", "session_id": 1.5}),
        step("root", {"janus": "keepalive", "transaction": "s3", "session_id": True}),
        step("root", {"janus": "keepalive", "transaction": "s4", "session_id": None}),
        step("root", {"janus": "keepalive", "transaction": "s5", "session_id": 0}),
        step("root", {"janus": "keepalive", "transaction": "s6", "handle_id": 5}),
        step("root", {"janus": "ping", "transaction": "s7", "handle_id": 5}),
        step("root", {"janus": "ping", "transaction": "s8", "session_id": 5}),
    ],
    "missing_fields_at_a_session": [
        create(),
        attach(),
        step("session", {"janus": "keepalive"}),
        step("session", {"transaction": "nj"}),
        step("handle", {"janus": "keepalive"}),
        step("handle", {"transaction": "nj2"}),
        step("session=123", {"janus": "keepalive"}),
        step("session", {"janus": 5, "transaction": "t5"}),
        step("session", {"janus": "destroy", "transaction": "x"}),
    ],
    "create_with_id": [
        step("root", {"janus": "create", "transaction": "c1", "id": "{fixed}"}, save={"session": "data.id"}),
        step("root", {"janus": "create", "transaction": "c2", "id": "{fixed}"}),
        step("root", {"janus": "create", "transaction": "c3", "id": "5"}),
        step("root", {"janus": "create", "transaction": "c4", "id": -1}),
        step("root", {"janus": "create", "transaction": "c5", "id": 1.5}),
        step("root", {"janus": "create", "transaction": "c6", "id": True}),
        step("root", {"janus": "create", "transaction": "c7", "id": 0}, save={"other": "data.id"}),
        step("root", {"janus": "create", "transaction": "c8", "id": None}, save={"other2": "data.id"}),
        step("session", {"janus": "destroy", "transaction": "d"}),
    ],
    "session_requests": [
        create(),
        step("session", {"janus": "keepalive", "transaction": "k"}),
        step("session", {"janus": "attach", "transaction": "a1"}),
        step("session", {"janus": "attach", "transaction": "a2", "plugin": 5}),
        step("session", {"janus": "attach", "transaction": "a3", "plugin": "janus.plugin.nope"}),
        step("session", {"janus": "attach", "transaction": "a4", "plugin": STREAMING, "opaque_id": 5}),
        step("session", {"janus": "attach", "transaction": "a5", "plugin": 5, "opaque_id": 5}),
        step("session", {"janus": "attach", "transaction": "a6", "plugin": STREAMING, "opaque_id": "op-1"}, save={"handle": "data.id"}),
        step("session", {"janus": "Attach", "transaction": "a7", "plugin": STREAMING}, save={"handle2": "data.id"}),
        step("session", {"janus": "attach", "transaction": "a8", "plugin": STREAMING, "opaque_id": None}, save={"handle3": "data.id"}),
        step("session", {"janus": "attach", "transaction": "a9", "plugin": None}),
        step("session", {"janus": "info", "transaction": "i"}),
        step("session", {"janus": "ping", "transaction": "p"}),
        step("session", {"janus": "create", "transaction": "c"}),
        step("session", {"janus": "foo", "transaction": "f"}),
        step("session", {"janus": "message", "transaction": "m", "body": {}}),
        step("session", {"janus": "trickle", "transaction": "t", "candidate": {"completed": True}}),
        step("session", {"janus": "detach", "transaction": "d"}),
        step("session", {"janus": "hangup", "transaction": "h"}),
        step("session", {"janus": "claim", "transaction": "cl"}),
        step("session", {"janus": "message", "transaction": "hs", "handle_id": "abc", "body": {}}),
        step("session", {"janus": "message", "transaction": "hz", "handle_id": 0, "body": {}}),
        step("session", {"janus": "message", "transaction": "hn", "handle_id": None, "body": {}}),
        step("session", {"janus": "message", "transaction": "hf", "handle_id": 1.5, "body": {}}),
        step("session", {"janus": "keepalive", "transaction": "hk", "handle_id": "abc"}),
        step("session=123", {"janus": "claim", "transaction": "cl2"}),
        step("session=123", {"janus": "keepalive", "transaction": "k2"}),
        step("session=-1", {"janus": "keepalive", "transaction": "k3"}),
        step("session", {"janus": "destroy", "transaction": "x"}),
        step("session", {"janus": "keepalive", "transaction": "k4"}),
        step("session", {"janus": "destroy", "transaction": "x2"}),
    ],
    "handle_requests": [
        create(),
        attach(),
        step("handle", {"janus": "keepalive", "transaction": "k"}),
        step("handle", {"janus": "attach", "transaction": "a", "plugin": STREAMING}),
        step("handle", {"janus": "destroy", "transaction": "d"}),
        step("handle", {"janus": "ping", "transaction": "p"}),
        step("handle", {"janus": "info", "transaction": "i"}),
        step("handle", {"janus": "create", "transaction": "c"}),
        step("handle", {"janus": "foo", "transaction": "f"}),
        step("handle", {"janus": "claim", "transaction": "cl"}),
        step("handle=123", {"janus": "keepalive", "transaction": "k2"}),
        step("handle=-1", {"janus": "keepalive", "transaction": "k3"}),
        step("handle", {"janus": "message", "transaction": "m1"}),
        message("m2", 5),
        message("m3", [1]),
        message("m4", {}),
        message("m5", {"request": "list"}, mask_data=True),
        message("m6", {"request": "nope"}),
        message("m6n", None),
        step("handle", {"janus": "hangup", "transaction": "h1"}),
        step("handle", {"janus": "hangup", "transaction": "h2", "reason": "bye"}),
        step("handle", {"janus": "detach", "transaction": "d1"}, events=1),
        step("handle", {"janus": "detach", "transaction": "d2"}),
        step("handle", {"janus": "message", "transaction": "m7", "body": {}}),
        step("session", {"janus": "destroy", "transaction": "x"}),
    ],
    "jsep_validation": [
        create(),
        attach(),
        message("j1", {"request": "list"}, jsep=5),
        message("j2", {"request": "list"}, jsep="offer"),
        message("j3", {"request": "list"}, jsep={}),
        message("j4", {"request": "list"}, jsep={"sdp": "v=0"}),
        message("j5", {"request": "list"}, jsep={"type": 5, "sdp": "v=0"}),
        message("j6", {"request": "list"}, jsep={"type": "foo", "sdp": "x"}),
        message("j7", {"request": "list"}, jsep={"type": "foo"}),
        message("j8", {"request": "list"}, jsep={"type": "answer"}),
        message("j9", {"request": "list"}, jsep={"type": "answer", "sdp": 5}),
        message("j10", {"request": "list"}, jsep={"type": "answer", "trickle": "x"}),
        message("j11", {"request": "list"}, jsep={"type": "answer", "sdp": "v=0", "trickle": "x"}),
        message("j12", {"request": "list"}, jsep={"type": "answer", "sdp": ANSWER_SDP_PLACEHOLDER}),
        message("j13", {"request": "list"}, jsep={"type": "ANSWER", "sdp": ANSWER_SDP_PLACEHOLDER}),
        message("j14", {"request": "list"}, jsep={"type": "answer", "sdp": "garbage"}),
        message("j15", {"request": "list"}, jsep={"type": "pranswer", "sdp": ANSWER_SDP_PLACEHOLDER}),
        message("j16", {"request": "list"}, jsep=None, mask_data=True),
        message("j17", 5, jsep=5),
        message("j18", {"request": "list"}, jsep={"type": "answer", "sdp": STANDALONE_ANSWER}),
        message("j19", {"request": "list"}, jsep={"type": "answer", "sdp": STANDALONE_ANSWER, "trickle": False}),
        message("j20", {"request": "list"}, jsep={"type": None, "sdp": "v=0"}),
        message("j21", {"request": "list"}, jsep={"type": "answer", "sdp": None}),
        message("j22", {"request": "list"}, jsep={"type": "answer", "sdp": "v=0", "trickle": None}),
        message("j23", {"request": "list"}, jsep={"type": "answer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}),
        message("j24", {"request": "list"}, jsep={"type": "answer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"}),
        message("j25", {"request": "list"}, jsep={"type": "answer", "sdp": ""}),
        step("session", {"janus": "destroy", "transaction": "x"}),
    ],
    "trickle_before_any_offer": [
        create(),
        attach(),
        step("handle", {"janus": "trickle", "transaction": "t1"}),
        step("handle", {"janus": "trickle", "transaction": "t2", "candidate": None}),
        step("handle", {"janus": "trickle", "transaction": "t3", "candidate": 5}),
        step("handle", {"janus": "trickle", "transaction": "t4", "candidates": 5}),
        step("handle", {"janus": "trickle", "transaction": "t5", "candidate": {}}),
        step("handle", {"janus": "trickle", "transaction": "t6", "candidate": {"completed": True}}),
        step("handle", {"janus": "trickle", "transaction": "t7", "candidate": {"candidate": "garbage"}}),
        step("handle", {"janus": "trickle", "transaction": "t8", "candidate": {"completed": True}, "candidates": []}),
        step("handle", {"janus": "trickle", "transaction": "t9", "candidates": [{"candidate": "x"}, 5]}),
        step("handle", {"janus": "trickle", "transaction": "t10", "candidate": None, "candidates": None}),
        step("handle", {"janus": "trickle", "transaction": "t11", "candidates": None}),
        step("handle", {"janus": "hangup", "transaction": "h"}),
        step("handle", {"janus": "detach", "transaction": "d"}, events=1),
        step("session", {"janus": "destroy", "transaction": "x"}),
    ],
    "offer_hangup_detach": [
        create(),
        attach(),
        watch(),
        step("handle", {"janus": "trickle", "transaction": "t1", "candidate": {}}),
        step("handle", {"janus": "trickle", "transaction": "t2", "candidates": 5}),
        step("handle", {"janus": "hangup", "transaction": "h1"}, events=1),
        step("handle", {"janus": "hangup", "transaction": "h2"}),
        step("handle", {"janus": "detach", "transaction": "d"}, events=1),
        step("session", {"janus": "destroy", "transaction": "x"}),
    ],
    "offer_then_detach": [
        create(),
        attach(),
        watch(),
        step("handle", {"janus": "detach", "transaction": "d"}, events=1),
        step("session", {"janus": "destroy", "transaction": "x"}),
    ],
    "answer_and_trickle": [
        create(),
        attach(),
        watch(),
        step("handle", {"janus": "trickle", "transaction": "early", "candidate": {"candidate": "candidate:1 1 udp 2122260223 192.0.2.9 50000 typ host", "sdpMid": "a", "sdpMLineIndex": 0}}),
        message("start", {"request": "start"}, jsep={"type": "answer", "sdp": ANSWER_SDP_PLACEHOLDER}, events=1),
        step("handle", {"janus": "trickle", "transaction": "t1", "candidate": 5}),
        step("handle", {"janus": "trickle", "transaction": "t2", "candidates": 5}),
        step("handle", {"janus": "trickle", "transaction": "t3", "candidate": {}}),
        step("handle", {"janus": "trickle", "transaction": "t4", "candidate": {"candidate": "garbage"}}),
        step("handle", {"janus": "trickle", "transaction": "t5", "candidate": {"candidate": "candidate:1 1 udp 2122260223 192.0.2.9 50000 typ host", "sdpMid": "a", "sdpMLineIndex": 0}}),
        step("handle", {"janus": "trickle", "transaction": "t6", "candidate": {"candidate": "candidate:2 1 udp 2122260223 192.0.2.9 50002 typ host", "sdpMLineIndex": 1}}),
        step("handle", {"janus": "trickle", "transaction": "t7", "candidate": {"sdpMid": "a"}}),
        step("handle", {"janus": "trickle", "transaction": "t8", "candidate": {"candidate": 5, "sdpMid": "a"}}),
        step("handle", {"janus": "trickle", "transaction": "t9", "candidates": [{"candidate": "x"}, 5, {}, {"completed": True}]}),
        step("handle", {"janus": "trickle", "transaction": "t10", "candidates": []}),
        step("handle", {"janus": "trickle", "transaction": "t11", "candidate": {"completed": True}}),
        step("handle", {"janus": "trickle", "transaction": "t12", "candidate": None}),
        step("handle", {"janus": "trickle", "transaction": "t13", "candidates": None}),
        step("handle", {"janus": "trickle", "transaction": "t14", "candidate": {"candidate": None, "sdpMid": "a"}}),
        step("handle", {"janus": "trickle", "transaction": "t15", "candidate": {"candidate": "candidate:3 1 udp 2122260223 192.0.2.9 50004 typ host", "sdpMid": None, "sdpMLineIndex": None}}),
        step("handle", {"janus": "trickle", "transaction": "t16", "candidate": {"completed": False}}),
        step("handle", {"janus": "trickle", "transaction": "t17", "candidate": {"candidate": "", "sdpMid": "a"}}),
        step("handle", {"janus": "trickle", "transaction": "t18", "candidate": {"candidate": "candidate:4 1 udp 2122260223 192.0.2.9 50006 typ host", "sdpMid": 5}}),
        step("handle", {"janus": "trickle", "transaction": "t19", "candidate": {"candidate": "candidate:4 1 udp 2122260223 192.0.2.9 50006 typ host", "sdpMLineIndex": "0"}}),
        step("handle", {"janus": "trickle", "transaction": "t20", "candidate": {"candidate": "candidate:5 1 udp 2122260223 192.0.2.9 50008 typ host", "sdpMid": "zz"}}),
        step("handle", {"janus": "trickle", "transaction": "t21", "candidate": {"candidate": "candidate:5 1 udp 2122260223 192.0.2.9 50008 typ host", "sdpMLineIndex": 7}}),
        message("again", {"request": "start"}, jsep={"type": "answer", "sdp": ANSWER_SDP_PLACEHOLDER}, events=1),
        step("handle", {"janus": "detach", "transaction": "d"}, events=1),
        step("session", {"janus": "destroy", "transaction": "x"}),
    ],
    "bad_answers": [
        create(),
        attach(),
        watch(),
        message("b1", {"request": "start"}, jsep={"type": "answer", "sdp": "{answer:no-ice}"}),
        message("b2", {"request": "start"}, jsep={"type": "answer", "sdp": "{answer:no-fingerprint}"}),
        message("b3", {"request": "start"}, jsep={"type": "answer", "sdp": "{answer:first-m-only}"}),
        message("b4", {"request": "start"}, jsep={"type": "answer", "sdp": "{answer:bad-m-line}"}),
        message("b5", {"request": "start"}, jsep={"type": "answer", "sdp": "{answer:bad-line}"}),
        message("b6", {"request": "start"}, jsep={"type": "answer", "sdp": ANSWER_SDP_PLACEHOLDER}, events=1),
        step("session", {"janus": "destroy", "transaction": "x"}),
    ],
    "answer_then_hangup": [
        create(),
        attach(),
        watch(),
        message("start", {"request": "start"}, jsep={"type": "answer", "sdp": ANSWER_SDP_PLACEHOLDER}, events=1),
        step("handle", {"janus": "hangup", "transaction": "h1"}, events=1),
        step("handle", {"janus": "hangup", "transaction": "h2"}),
        step("handle", {"janus": "detach", "transaction": "d"}, events=1),
        step("session", {"janus": "destroy", "transaction": "x"}),
    ],
    "answer_then_destroy": [
        create(),
        attach(),
        watch(),
        message("start", {"request": "start"}, jsep={"type": "answer", "sdp": ANSWER_SDP_PLACEHOLDER}, events=1),
        step("session", {"janus": "destroy", "transaction": "x"}),
        step("session", {"janus": "keepalive", "transaction": "k"}),
    ],
    "destroy_with_live_handles": [
        create(),
        attach(),
        attach("handle2"),
        watch(),
        step("session", {"janus": "destroy", "transaction": "x"}),
        step("session", {"janus": "keepalive", "transaction": "k"}),
    ],
}


# ---------------------------------------------------------------------------
# Running API scenarios

class ApiClient(Protocol):
    async def request(self, session_id: int | None, handle_id: int | None, body: Any) -> Message: ...
    async def events(self, count: int, timeout: float) -> list[Message]: ...
    async def stray_events(self, window: float) -> list[Message]: ...
    async def close(self) -> None: ...


def answer_from_offer(offer: str) -> str:
    """A client's answer to ``offer`` (enough for Janus and fanout to accept it)."""
    lines = []
    for line in offer.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if line.startswith("a=ice-ufrag:"):
            line = "a=ice-ufrag:abcd"
        elif line.startswith("a=ice-pwd:"):
            line = "a=ice-pwd:abcdefghijklmnopqrstuvwx"
        elif line.startswith("a=setup:"):
            line = "a=setup:active"
        elif line == "a=sendonly":
            line = "a=recvonly"
        elif line.startswith(("a=candidate", "a=end-of-candidates", "a=ssrc", "a=msid:", "a=ice-lite")):
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def spoil_answer(answer: str, how: str) -> str:
    """A bad answer: ``no-ice``, ``no-fingerprint``, ``first-m-only``, ``bad-m-line``, ``bad-line``."""
    lines = answer.split("\r\n")
    if how == "no-ice":
        lines = [line for line in lines if not line.startswith(("a=ice-ufrag:", "a=ice-pwd:"))]
    elif how == "no-fingerprint":
        lines = [line for line in lines if not line.startswith("a=fingerprint:")]
    elif how == "first-m-only":
        second = [index for index, line in enumerate(lines) if line.startswith("m=")][1]
        lines = lines[:second] + [""]
    elif how == "bad-m-line":
        lines = [("m=audio" if line.startswith("m=audio") else line) for line in lines]
    elif how == "bad-line":
        lines.insert(3, "this is not SDP")
    else:
        raise ValueError(how)
    return "\r\n".join(lines)


def _target(at: str, variables: dict[str, Any]) -> tuple[int | None, int | None]:
    kind, _, explicit = at.partition("=")
    if kind == "root":
        return None, None
    if kind == "session":
        return (int(explicit) if explicit else variables["session"]), None
    handle = int(explicit) if explicit else variables["handle2" if kind == "handle2" else "handle"]
    return variables["session"], handle


def _substitute(value: Any, variables: dict[str, Any], offer: str | None) -> Any:
    if isinstance(value, dict):
        return {key: _substitute(item, variables, offer) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, variables, offer) for item in value]
    if value == ANSWER_SDP_PLACEHOLDER:
        return answer_from_offer(offer) if offer else "v=0\r\n"
    if isinstance(value, str) and value.startswith("{answer:") and value.endswith("}"):
        return spoil_answer(answer_from_offer(offer) if offer else "v=0\r\n", value[len("{answer:"):-1])
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in variables:
        return variables[value[1:-1]]
    return value


def mask(value: Any, variables: dict[str, Any], *, mask_data: bool = False) -> Any:
    """Ids to ``{name}``, SDP to ``<sdp>``, plugin data to ``<data>`` (when asked)."""
    value = copy.deepcopy(value)
    names = sorted(((v, k) for k, v in variables.items() if isinstance(v, int)), key=lambda item: -len(str(item[0])))

    def walk(item: Any, key: str | None = None) -> Any:
        if isinstance(item, dict):
            if mask_data and "plugindata" in item and isinstance(item["plugindata"], dict):
                item["plugindata"]["data"] = "<data>"
            return {k: walk(v, k) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, bool):
            return item
        if isinstance(item, int):
            for number, name in names:
                if item == number:
                    return f"{{{name}}}"
            return item
        if isinstance(item, str):
            if key == "sdp":
                return "<sdp>"
            for number, name in names:
                item = re.sub(rf"\b{number}\b", f"{{{name}}}", item)
            return item
        return item

    return walk(value)


async def run_api_scenario(client: ApiClient, steps: list[dict[str, Any]], *, event_timeout: float = 10.0, stray_window: float = 1.0) -> list[dict[str, Any]]:
    variables: dict[str, Any] = {"fixed": 4_000_000_000_000 + secrets.randbelow(1_000_000_000_000)}
    offer: str | None = None
    results: list[dict[str, Any]] = []
    for item in steps:
        session_id, handle_id = _target(item["at"], variables)
        body = _substitute(item["request"], variables, offer)
        response = await client.request(session_id, handle_id, body)
        for name, path in item.get("save", {}).items():
            value: Any = response
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value is not None:
                variables[name] = value
        received = await client.events(item.get("events", 0), event_timeout)
        for event in received:
            jsep = event.get("jsep")
            if isinstance(jsep, dict) and jsep.get("type") == "offer":
                offer = jsep["sdp"]
        mask_data = bool(item.get("mask_data"))
        results.append(
            {
                "response": mask(response, variables, mask_data=mask_data),
                "events": [mask(event, variables) for event in received],
            }
        )
    stray = await client.stray_events(stray_window)
    await client.close()
    results.append({"stray_events": [mask(event, variables) for event in stray]})
    return results


class HttpApiClient:
    """Requests over Janus's REST API; events by a long poll that runs all along (as janus.js
    does), so no event is lost to a poll the client gave up on."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.session_id: int | None = None
        self.received: asyncio.Queue[Message] = asyncio.Queue()
        self._poller: asyncio.Task[None] | None = None

    async def request(self, session_id: int | None, handle_id: int | None, body: Any) -> Message:
        path = ""
        if session_id is not None:
            path += f"/{session_id}"
        if handle_id is not None:
            path += f"/{handle_id}"
        async with self.http.post(self.base_url + path, data=json.dumps(body)) as response:
            reply = await response.json(content_type=None)
        if isinstance(reply, dict) and reply.get("janus") == "success" and session_id is None and "data" in reply:
            self._poll_session(reply["data"].get("id"))
        elif session_id is not None and isinstance(reply, dict) and reply.get("janus") != "error":
            self._poll_session(session_id)
        if isinstance(body, dict) and str(body.get("janus")).lower() == "claim" and reply.get("janus") == "success":
            # Janus gives the session to the claiming request: a poll begun before hears nothing more
            await self._stop_polling()
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        return reply  # type: ignore[no-any-return]

    def _poll_session(self, session_id: int | None) -> None:
        if self.session_id is None and session_id is not None:
            self.session_id = session_id
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            try:
                async with self.http.get(f"{self.base_url}/{self.session_id}?maxev=10") as response:
                    if response.status != 200:
                        return
                    reply = await response.json(content_type=None)
            except aiohttp.ClientError:
                return
            for event in reply if isinstance(reply, list) else [reply]:
                if event.get("janus") != "keepalive":
                    self.received.put_nowait(event)

    async def events(self, count: int, timeout: float) -> list[Message]:
        return await take(self.received, count, timeout)

    async def stray_events(self, window: float) -> list[Message]:
        return await take(self.received, 1000, window)

    async def close(self) -> None:
        await self._stop_polling()

    async def _stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None


async def take(queue: asyncio.Queue[Message], count: int, timeout: float) -> list[Message]:
    """Up to ``count`` messages from ``queue``, waiting at most ``timeout`` seconds in all."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    taken: list[Message] = []
    while len(taken) < count:
        try:
            taken.append(await asyncio.wait_for(queue.get(), max(0.0, deadline - loop.time())))
        except TimeoutError:
            break
    return taken


class WebSocketApiClient:
    """Requests over the WebSocket transport; responses matched by transaction, the rest are events."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.responses: list[Message] = []
        self.pending: list[Message] = []

    async def request(self, session_id: int | None, handle_id: int | None, body: Any) -> Message:
        if isinstance(body, dict):
            body = dict(body)
            if session_id is not None:
                body["session_id"] = session_id
            if handle_id is not None:
                body["handle_id"] = handle_id
        await self.socket.send_str(json.dumps(body))
        transaction = body.get("transaction") if isinstance(body, dict) else None
        while True:
            incoming = json.loads((await self.socket.receive(timeout=10)).data)
            if incoming.get("janus") in ("success", "error", "ack", "pong", "server_info") and (
                incoming.get("transaction") == transaction or "transaction" not in incoming
            ):
                return incoming  # type: ignore[no-any-return]
            self.pending.append(incoming)

    async def events(self, count: int, timeout: float) -> list[Message]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.pending) < count and loop.time() < deadline:
            try:
                frame = await self.socket.receive(timeout=max(0.05, deadline - loop.time()))
            except TimeoutError:
                break
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            self.pending.append(json.loads(frame.data))
        taken, self.pending = self.pending[:count], self.pending[count:]
        return taken

    async def stray_events(self, window: float) -> list[Message]:
        return await self.events(1000, window)

    async def close(self) -> None:
        pass


@contextlib.asynccontextmanager
async def websocket(url: str, protocols: tuple[str, ...] = ("janus-protocol",), **options: Any) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, protocols=protocols, **options) as socket:
            yield socket


# ---------------------------------------------------------------------------
# Raw HTTP and WebSocket cases

@dataclass
class RawHttp:
    method: str
    path: str  # after the host, with {session} and {handle}
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 10.0


BAD_JSON_BODIES = [
    " ", "{", '{"janus"', '{"janus":', '{"janus":"cre', '{"janus":"create",}', '{"a":1}}', '{"a":1} x',
    '{"a":tru}', '{"a":nul}', "{'a':1}", '{"a":01}', '{"a":1.}', '{"a":-}', '{"a":"\\x"}', '{"a":"\\u12"}',
    '{\n"a":\n1,\n}', '{"a":"\x01"}', '{"a":"line\nbreak"}', '{"a":[1,2}', '{"a" 1}', '{1:2}', '"str"', "123", "null",
    '{"a":1e400}', '{"a":' + TOO_BIG + "}", '{"a":-' + TOO_BIG + "}", '{"a":"\\ud800"}', '{"a":"\\udc00"}',
    '{"a":"\\ud800\\u0041"}', '{"janus":"ping","transaction":"\\u0000"}', '{"a\\u0000b":1}', '{"a":NaN}',
    '{"a":Infinity}', "[" * 2100 + "]" * 2100, '{"a":"' + "x" * 30,
]
WEBSOCKET_BODIES = [
    '{"janus":"ping","transaction":"p1"}{"janus":"ping","transaction":"p2"}',
    '{"janus":"ping","transaction":"p3"} x',
    '{"janus":"ping","transaction":"p4"}    ',
    '  {"janus":"ping","transaction":"p5"}',
    '{"janus":"ping","transaction":"p6"}\n',
    "[1]",
    '[{"janus":"ping","transaction":"p7"}]',
    "{}",
    "",
]


def http_cases() -> dict[str, RawHttp]:
    """Raw HTTP requests; paths may use {session} and {handle} (made by the runner first)."""
    ping = b'{"janus":"ping","transaction":"p"}'
    keepalive = b'{"janus":"keepalive","transaction":"k"}'
    message = b'{"janus":"message","transaction":"m","body":{"request":"list"}}'
    preflight = {"Origin": "http://a.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-extra"}
    cases = {
        "get_info": RawHttp("GET", "/janus/info"),
        "post_info": RawHttp("POST", "/janus", b'{"janus":"info","transaction":"i"}'),
        "get_root": RawHttp("GET", "/janus"),
        "get_unknown_session": RawHttp("GET", "/janus/123"),
        "get_handle_path": RawHttp("GET", "/janus/{session}/{handle}"),
        "get_unknown_handle_path": RawHttp("GET", "/janus/{session}/123"),
        "get_other_path": RawHttp("GET", "/other"),
        "post_other_path": RawHttp("POST", "/other", ping),
        "options_root": RawHttp("OPTIONS", "/janus"),
        "options_preflight": RawHttp("OPTIONS", "/janus", headers=preflight),
        "options_session": RawHttp("OPTIONS", "/janus/{session}", headers={"Access-Control-Request-Method": "GET"}),
        "delete_session": RawHttp("DELETE", "/janus/{session}"),
        "patch_root": RawHttp("PATCH", "/janus", ping),
        "post_with_origin": RawHttp("POST", "/janus", ping, headers={"Origin": "http://a.example"}),
        "post_trailing_slash_root": RawHttp("POST", "/janus/", ping),
        "post_trailing_slash_session": RawHttp("POST", "/janus/{session}/", keepalive),
        "post_trailing_slash_handle": RawHttp("POST", "/janus/{session}/{handle}/", message),
        "post_session_not_a_number": RawHttp("POST", "/janus/abc", b'{"janus":"attach","transaction":"a","plugin":"janus.plugin.streaming"}'),
        "post_session_number_prefix": RawHttp("POST", "/janus/12abc", keepalive),
        "post_session_negative": RawHttp("POST", "/janus/-5", keepalive),
        "post_session_zero": RawHttp("POST", "/janus/0", keepalive),
        "post_session_not_a_number_with_handle": RawHttp("POST", "/janus/abc/{handle}", message),
        "post_handle_not_a_number": RawHttp("POST", "/janus/{session}/abc", message),
        "post_conflicting_session": RawHttp("POST", "/janus/123", b'{"janus":"keepalive","transaction":"k","session_id":{session}}'),
        "post_conflicting_handle": RawHttp("POST", "/janus/{session}/123", b'{"janus":"message","transaction":"m","body":{},"handle_id":{handle}}'),
        "post_session_in_body_at_root": RawHttp("POST", "/janus", b'{"janus":"keepalive","transaction":"k","session_id":{session}}'),
        "post_handle_in_body_at_session": RawHttp("POST", "/janus/{session}", b'{"janus":"message","transaction":"m","body":{"request":"list"},"handle_id":{handle}}'),
        "post_string_session_in_body": RawHttp("POST", "/janus/{session}", b'{"janus":"keepalive","transaction":"k","session_id":"abc"}'),
        "post_array": RawHttp("POST", "/janus", b"[1]"),
        "post_empty_object": RawHttp("POST", "/janus", b"{}"),
        "post_bom": RawHttp("POST", "/janus", b"\xef\xbb\xbf{}"),
        "post_invalid_utf8": RawHttp("POST", "/janus", b'{"janus":"\xff"}'),
    }
    for index, body in enumerate(BAD_JSON_BODIES):
        cases[f"bad_json_{index:02d}"] = RawHttp("POST", "/janus", body.encode())
    return cases


def secured_http_cases() -> dict[str, RawHttp]:
    """With api_secret = "s3cret", allow_origin = "http://foo.example", enforce_cors = true."""
    good = {"Origin": "http://foo.example"}
    bad = {"Origin": "http://other.example"}
    return {
        "create_without_origin": RawHttp("POST", "/janus", b'{"janus":"create","transaction":"c","apisecret":"s3cret"}'),
        "create_wrong_origin": RawHttp("POST", "/janus", b'{"janus":"create","transaction":"c","apisecret":"s3cret"}', headers=bad),
        "options_wrong_origin": RawHttp("OPTIONS", "/janus", headers={**bad, "Access-Control-Request-Method": "POST"}),
        "options_right_origin": RawHttp("OPTIONS", "/janus", headers={**good, "Access-Control-Request-Method": "POST"}),
        "create_without_secret": RawHttp("POST", "/janus", b'{"janus":"create","transaction":"c"}', headers=good),
        "create_wrong_secret": RawHttp("POST", "/janus", b'{"janus":"create","transaction":"c","apisecret":"bad"}', headers=good),
        "create_secret_not_string": RawHttp("POST", "/janus", b'{"janus":"create","transaction":"c","apisecret":5}', headers=good),
        "ping_without_secret": RawHttp("POST", "/janus", b'{"janus":"ping","transaction":"p"}', headers=good),
        "info_without_secret": RawHttp("GET", "/janus/info", headers=good),
        "unknown_root_request_without_secret": RawHttp("POST", "/janus", b'{"janus":"foo","transaction":"f"}', headers=good),
        "bad_json_without_secret": RawHttp("POST", "/janus", b'{"janus":"create"', headers=good),
        "create_with_secret": RawHttp("POST", "/janus", b'{"janus":"create","transaction":"c","apisecret":"s3cret"}', headers=good),
        "keepalive_without_secret": RawHttp("POST", "/janus/{session}", b'{"janus":"keepalive","transaction":"k"}', headers=good),
        "keepalive_with_secret": RawHttp("POST", "/janus/{session}", b'{"janus":"keepalive","transaction":"k","apisecret":"s3cret"}', headers=good),
        "unknown_session_without_secret": RawHttp("POST", "/janus/123", b'{"janus":"keepalive","transaction":"k"}', headers=good),
        "poll_without_secret": RawHttp("GET", "/janus/{session}?maxev=1", headers=good),
        "poll_unknown_session_with_secret": RawHttp("GET", "/janus/123?maxev=1&apisecret=s3cret", headers=good),
    }


def record_headers(headers: Any) -> dict[str, str]:
    return {name: headers[name] for name in RECORDED_HEADERS if name in headers}


async def run_http_case(
    http: aiohttp.ClientSession, origin: str, case: RawHttp, variables: dict[str, Any]
) -> dict[str, Any]:
    path = case.path.format(**variables)
    body = case.body
    if body is not None:
        for name, value in variables.items():
            body = body.replace(f"{{{name}}}".encode(), str(value).encode())
    try:
        async with http.request(
            case.method, origin + path, data=body, headers=case.headers, allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=case.timeout), skip_auto_headers=("Content-Type",),
        ) as response:
            raw = await response.read()
            result: dict[str, Any] = {"status": response.status, "headers": record_headers(response.headers)}
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
        return {"closed": type(error).__name__}
    try:
        result["json"] = mask(json.loads(raw), variables)
    except ValueError:
        result["text"] = raw.decode("utf-8", errors="replace")
    result["headers"].pop("Content-Length", None)
    result["headers"] = mask(result["headers"], variables)
    return result


async def run_websocket_body(url: str, body: str, replies_window: float = 1.0) -> list[Message]:
    async with websocket(url) as socket:
        await socket.send_str(body)
        replies: list[Message] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + replies_window
        while loop.time() < deadline:
            try:
                frame = await socket.receive(timeout=max(0.05, deadline - loop.time()))
            except TimeoutError:
                break
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            replies.append(json.loads(frame.data))
        return replies
