"""jansson's reading, checked against the errors the real Janus gave for the same bytes
(its HTTP transport reports the line, its WebSocket transport the line and column)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fanout.core import jansson
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.core.harness import recording
from tests.core.janus_scenarios import BAD_JSON_BODIES, WEBSOCKET_BODIES

HTTP_REASON = re.compile(r"JSON error: on line (\d+): (.*)", re.DOTALL)
WEBSOCKET_REASON = re.compile(r"Invalid Janus API request - <string>\((\d+),(\d+)\): (.*)", re.DOTALL)


def recorded_http_error(index: int) -> tuple[int, str] | None:
    reply = recording("janus_http_raw")[f"bad_json_{index:02d}"]["json"]
    match = HTTP_REASON.fullmatch(reply["error"]["reason"]) if reply["error"]["code"] == 454 else None
    return (int(match.group(1)), match.group(2)) if match else None


def recorded_websocket_error(body: str) -> tuple[int, int, str] | None:
    replies = recording("janus_websocket_raw")[body]
    match = WEBSOCKET_REASON.fullmatch(replies[0]["error"]["reason"]) if replies[0].get("janus") == "error" else None
    return (int(match.group(1)), int(match.group(2)), match.group(3)) if match else None


@pytest.mark.parametrize("index", range(len(BAD_JSON_BODIES)))
def test_loads_fails_as_janus_over_http(index: int) -> None:
    expected = recorded_http_error(index)
    assert expected is not None
    with pytest.raises(jansson.JsonError) as error:
        jansson.loads(BAD_JSON_BODIES[index].encode())
    assert (error.value.line, error.value.text) == expected


@pytest.mark.parametrize("body", BAD_JSON_BODIES + WEBSOCKET_BODIES)
def test_loads_sequence_as_janus_over_websocket(body: str) -> None:
    expected = recorded_websocket_error(body)
    if expected is None:  # Janus read it; what it answered is the Gateway's business
        values = jansson.loads_sequence(body)
        assert len(values) == len(recording("janus_websocket_raw")[body])
        return
    with pytest.raises(jansson.JsonError) as error:
        jansson.loads_sequence(body)
    assert (error.value.line, error.value.column, error.value.text) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xef\xbb\xbf{}", "JSON error: on line 1: '[' or '{' expected near '\ufeff'"),
        (b'{"janus":"\xff"}', "JSON error: on line 1: unable to decode byte 0xff near '\"'"),
    ],
)
def test_bytes_janus_refused(raw: bytes, reason: str) -> None:
    """A byte order mark and a byte that is not UTF-8 (recorded as post_bom, post_invalid_utf8)."""
    recorded = recording("janus_http_raw")
    assert reason in (recorded["post_bom"]["json"]["error"]["reason"], recorded["post_invalid_utf8"]["json"]["error"]["reason"])
    with pytest.raises(jansson.JsonError) as error:
        jansson.loads(raw)
    assert f"JSON error: on line {error.value.line}: {error.value.text}" == reason


@pytest.mark.parametrize(
    "text",
    [
        '{"a": [1, -2, 3.5, -0.0, 1e10, true, false, null, "x"], "b": {"c": {}}, "d": []}',
        '{"s": "\\u00e9\\ud83d\\ude00\\n\\t\\"\\\\\\/"}',
        '{"max": 9223372036854775807, "min": -9223372036854775808}',
        '  [ {"nested": [[[[[]]]]]} ]  ',
        '{"a": 1, "a": 2}',
        '{"unicode": "é😀"}',
    ],
)
def test_loads_reads_what_jansson_reads(text: str) -> None:
    assert jansson.loads(text) == json.loads(text)
    assert jansson._Parser(text.encode()).document(eof_check=True)[0] == json.loads(text)  # the slow path too


def test_depth_limit_is_janus_s() -> None:
    value = jansson.loads("[" * 2048 + "]" * 2048)
    for _ in range(2047):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value == []
    with pytest.raises(jansson.JsonError) as error:
        jansson.loads("[" * 2049 + "]" * 2049)
    assert (error.value.text, error.value.column) == ("maximum parsing depth reached near '['", 2049)


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ('{"a":1}{"b":2}[3]', [{"a": 1}, {"b": 2}, [3]]),
        ('  {"a":1}', [{"a": 1}]),
        ('{"a":"\\u00e9"} {"b":2}', [{"a": "é"}, {"b": 2}]),
    ],
)
def test_loads_sequence(text: str, values: list[Any]) -> None:
    assert jansson.loads_sequence(text) == values


def test_error_position() -> None:
    with pytest.raises(jansson.JsonError) as error:
        jansson.loads('{\n  "a": tru\n}')
    assert (error.value.line, error.value.column, error.value.position) == (2, 10, 12)
    assert str(error.value) == "invalid token near 'tru'"


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=jansson.INT64_MIN, max_value=jansson.INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0")),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5).filter(lambda key: "\0" not in key), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(JSON_VALUES, max_size=4) | st.dictionaries(st.text(max_size=5).filter(lambda key: "\0" not in key), JSON_VALUES, max_size=4), st.booleans())
def test_slow_path_reads_as_the_standard_library(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert jansson._Parser(text.encode()).document(eof_check=True)[0] == json.loads(text)
    assert jansson.loads(text) == json.loads(text)
