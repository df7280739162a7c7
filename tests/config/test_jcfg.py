import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.config.jcfg import ConfigError, ConfigList, Group, dumps, load, parse

DATA = Path(__file__).parent / "data"
JANUS_CONFIGS = sorted(Path("/etc/janus").glob("*.jcfg"))

# Where fanout deliberately differs from libconfig 1.5 (the version Debian's Janus uses).
LIBCONFIG_DIFFERENCES = {
    # libconfig 1.5 keeps the low 32 bits of a decimal that does not fit; fanout keeps the number.
    "a = 99999999999\n": "value",
    # libconfig 1.5 silently drops everything after an unterminated comment; fanout says so.
    "a = 1 /* never closed\n": "verdict",
    # Same verdict, but fanout names the line where the bad token starts, libconfig the next one.
    'a = "unterminated\n': "line",
    "a = -0x10\n": "line",
    "a = 1.5e\n": "line",
}


def lookup(root: Group, path: str) -> Any:
    value: Any = root
    for part in path.split("."):
        value = value[int(part[1:-1])] if part.startswith("[") else value[part]
    return value


@pytest.mark.parametrize("case", json.loads((DATA / "libconfig_cases.json").read_text()), ids=lambda c: c["text"][:30])
def test_accepts_and_rejects_what_libconfig_does(case: dict[str, Any]) -> None:
    expected = case["libconfig"]
    difference = LIBCONFIG_DIFFERENCES.get(case["text"])
    if expected["ok"] and difference != "verdict":
        root = parse(case["text"], "x.jcfg")
        values = {path: lookup(root, path) for path in case["paths"]}
        if difference != "value":
            assert values == expected["values"]
    else:
        with pytest.raises(ConfigError) as error:
            parse(case["text"], "x.jcfg")
        if difference is None:
            assert str(error.value).startswith(f"x.jcfg:{expected['line']}: ")


@pytest.mark.parametrize("path", [p for p in JANUS_CONFIGS if p.name != "janus.transport.mqtt.jcfg"], ids=lambda p: p.name)
def test_every_janus_config_file_parses(path: Path) -> None:
    root = load(path)
    assert len(root) > 0
    assert "general" in root


def test_janus_mqtt_config_fails_where_libconfig_fails() -> None:
    # Debian's janus.transport.mqtt.jcfg has `certfile = /etc/ssl/...` unquoted at line 30;
    # libconfig (and so Janus itself) rejects it at that line too.
    with pytest.raises(ConfigError, match=r"^janus.transport.mqtt.jcfg:30: unexpected character '/'$"):
        load("/etc/janus/janus.transport.mqtt.jcfg")


def test_janus_streaming_config_values() -> None:
    root = load("/etc/janus/janus.plugin.streaming.jcfg")
    sample = root.get_group("rtp-sample")
    assert sample is not None
    assert sample.get_str("type") == "rtp"
    assert sample.get_int("id") == 1
    assert sample.get_bool("audio") is True
    assert sample.get_int("videoport") == 5004
    multistream = root.get_group("multistream-test")
    assert multistream is not None
    media = multistream.get_list("media")
    assert isinstance(media, ConfigList)
    assert [entry["mid"] for entry in media if isinstance(entry, Group)] == ["a", "v1", "v2"]


def test_janus_core_config_array_of_strings() -> None:
    general = load("/etc/janus/janus.jcfg").get_group("general")
    assert general is not None
    folders = general.get_list("protected_folders")
    assert folders is not None
    assert folders[:3] == ["/bin", "/boot", "/dev"]
    assert folders.locations[0].line == 162


def test_syntax_forms() -> None:
    root = parse(
        """
        # comment
        // comment
        /* block
           comment */
        general: {
            name = "a" "b"   // adjacent strings
            port: 0x1F;
            big = 5000000000L,
            ratio = .5
            on = TRUE; off = false
            escaped = "tab\\there \\"q\\" \\x41 \\\\"
            list = ( 1, "two", { three = 3 }, [ 4, 5 ], ( 6 ) )
            empty = {}
        }
        """,
        "t.jcfg",
    )
    general = root["general"]
    assert isinstance(general, Group)
    assert dict(general) | {"list": None, "empty": None} == {
        "name": "ab",
        "port": 31,
        "big": 5000000000,
        "ratio": 0.5,
        "on": True,
        "off": False,
        "escaped": 'tab\there "q" A \\',
        "list": None,
        "empty": None,
    }
    items = general["list"]
    assert isinstance(items, ConfigList)
    assert items[:2] == [1, "two"]
    assert isinstance(items[2], Group) and items[2]["three"] == 3
    assert items[3] == [4, 5] and items[4] == [6]


def test_locations_name_file_and_line() -> None:
    root = parse("a = 1\n\nb = {\n  c = 2\n}\n", "here.jcfg")
    group = root.get_group("b")
    assert group is not None
    assert str(root.location_of("a")) == "here.jcfg:1"
    assert str(group.location) == "here.jcfg:3"
    assert str(group.location_of("c")) == "here.jcfg:4"
    assert group.key_path("c") == "b.c"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("general: {\n  port 8088\n}\n", "janus.jcfg:2: expected '=' or ':' after 'port'"),
        ("a = 1;\na = 2\n", "janus.jcfg:2: duplicate setting 'a' (first at line 1)"),
        ("g = {\n  a = 1\n", "janus.jcfg:3: unexpected end of file in group 'g' (opened at line 1), expected '}'"),
        ("a = (1, 2\n", "janus.jcfg:2: unexpected end of file in list 'a' (opened at line 1), expected ')'"),
        ("a = [1, \"x\"]\n", "janus.jcfg:1: mixed types in array 'a' (an array holds scalars of one type; use a list ( ... ))"),
        ("a = [ { b = 1 } ]\n", "janus.jcfg:1: an array [ ... ] holds only scalars ('a'); use a list ( ... )"),
        ("\n\na = \"open\n", "janus.jcfg:3: unterminated string"),
        ("a = 1 /* open\n", "janus.jcfg:1: unterminated comment /* ... */"),
        ("a = 1\n}\n", "janus.jcfg:2: unexpected '}' (no group is open)"),
        ("a = $\n", "janus.jcfg:1: unexpected character '$'"),
        ("a = 12ab\n", "janus.jcfg:1: invalid number '12ab'"),
        ("a = ;\n", "janus.jcfg:1: expected a value for 'a', found ';'"),
        ("a =\n", "janus.jcfg:2: unexpected end of file, expected a value for 'a'"),
        ("\"a\" = 1\n", "janus.jcfg:1: expected a setting name, found '\"a\"'"),
        ("a = \"\\xZZ\"\n", "janus.jcfg:1: invalid escape '\\xZZ' in string (expected two hex digits)"),
        ("a = (1, 2,)\n", "janus.jcfg:1: expected a value for 'a[2]', found ')'"),
        ("@include nofile\n", "janus.jcfg:1: expected @include \"file\""),
    ],
)
def test_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(text, "janus.jcfg")
    assert str(error.value) == message


def test_include_is_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ports.inc").write_text("port = 8088\nws_port = 8188\n")
    (tmp_path / "main.jcfg").write_text('general: {\n  @include "sub/ports.inc"\n  base_path = "/janus"\n}\n')
    general = load(tmp_path / "main.jcfg")["general"]
    assert isinstance(general, Group)
    assert dict(general) == {"port": 8088, "ws_port": 8188, "base_path": "/janus"}
    assert str(general.location_of("ws_port")) == "ports.inc:2"
    assert str(general.location_of("base_path")) == "main.jcfg:3"


def test_errors_inside_an_included_file_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "bad.inc").write_text("a = 1\nb c\n")
    (tmp_path / "main.jcfg").write_text('@include "bad.inc"\n')
    with pytest.raises(ConfigError, match=r"^bad.inc:2: expected '=' or ':' after 'b'$"):
        load(tmp_path / "main.jcfg")


def test_missing_include(tmp_path: Path) -> None:
    (tmp_path / "main.jcfg").write_text('a = 1\n@include "nothere.inc"\n')
    with pytest.raises(ConfigError, match=r"^main.jcfg:2: cannot include 'nothere.inc': No such file or directory$"):
        load(tmp_path / "main.jcfg")


def test_include_loop_is_stopped(tmp_path: Path) -> None:
    (tmp_path / "loop.jcfg").write_text('@include "loop.jcfg"\n')
    with pytest.raises(ConfigError, match=r"^loop.jcfg:1: @include nested too deeply$"):
        load(tmp_path / "loop.jcfg")


def test_missing_file_and_bad_encoding(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^absent.jcfg: cannot read: No such file or directory$"):
        load(tmp_path / "absent.jcfg")
    (tmp_path / "latin1.jcfg").write_bytes(b"a = 1\nb = \"caf\xe9\"\n")
    with pytest.raises(ConfigError, match=r"^latin1.jcfg:2: not valid UTF-8$"):
        load(tmp_path / "latin1.jcfg")


def test_reading_marks_keys_and_unread_lists_the_rest() -> None:
    root = parse(
        """
        general: { session_timeout = 60; debug_timestamps = true; nested = { x = 1; y = 2 } }
        empty: {}
        media = ( { mid = "a"; label = "l" }, { mid = "v" } )
        folders = [ "/bin", "/etc" ]
        """,
        "janus.jcfg",
    )
    general = root.get_group("general")
    assert general is not None
    assert "debug_timestamps" in general  # `in` does not count as reading
    assert general.get_int("session_timeout") == 60
    nested = general.get_group("nested")
    assert nested is not None and nested.get_int("x") == 1
    media = root.get_list("media")
    assert media is not None
    first = media[0]
    assert isinstance(first, Group) and first.get_str("mid") == "a"
    assert root.unread() == [
        "general.debug_timestamps",
        "general.nested.y",
        "media[0].label",
        "media[1].mid",
        "folders",
    ]
    general.mark_read("debug_timestamps")
    root.get_list("folders")
    assert root.unread() == ["general.nested.y", "media[0].label", "media[1].mid"]


def test_typed_getters_convert_as_janus_does() -> None:
    root = parse(
        'i = 5; s = "42"; b1 = true; b2 = "yes"; b3 = "No"; b4 = 1; b5 = "0"; f = 2; str_from_int = 8088; fl = "2.5"',
        "x.jcfg",
    )
    assert root.get_int("i") == 5
    assert root.get_int("s") == 42  # Janus reads every value as text
    assert root.get_bool("b1") is True
    assert root.get_bool("b2") is True
    assert root.get_bool("b3") is False
    assert root.get_bool("b4") is True
    assert root.get_bool("b5") is False
    assert root.get_float("f") == 2.0
    assert root.get_float("fl") == 2.5
    assert root.get_str("str_from_int") == "8088"
    assert root.get_int("missing", 7) == 7
    assert root.get_str("missing") is None
    assert root.get_group("missing") is None
    assert root.get_list("missing") is None


@pytest.mark.parametrize(
    ("getter", "text", "message"),
    [
        ("get_int", 'general: {\n  port = "abc"\n}', 'x.jcfg:2: general.port must be an integer, not "abc"'),
        ("get_int", "port = true", "x.jcfg:1: port must be an integer, not true"),
        ("get_int", "port = 1.5", "x.jcfg:1: port must be an integer, not 1.5"),
        ("get_bool", 'flag = "maybe"', 'x.jcfg:1: flag must be true or false, not "maybe"'),
        ("get_bool", "flag = 2", "x.jcfg:1: flag must be true or false, not 2"),
        ("get_str", "name = { }", "x.jcfg:1: name must be a string, not a group"),
        ("get_str", "name = true", "x.jcfg:1: name must be a string, not true"),
        ("get_float", 'ratio = "x"', 'x.jcfg:1: ratio must be a number, not "x"'),
        ("get_group", "g = 1", "x.jcfg:1: g must be a group { ... }, not 1"),
        ("get_list", "l = { }", "x.jcfg:1: l must be a list ( ... ) or array [ ... ], not a group"),
    ],
)
def test_typed_getters_reject_wrong_types_with_file_and_line(getter: str, text: str, message: str) -> None:
    root = parse(text, "x.jcfg")
    group = root.get_group("general") if "general" in root else root
    assert group is not None
    key = next(iter(group))
    with pytest.raises(ConfigError) as error:
        getattr(group, getter)(key)
    assert str(error.value) == message


# -- writing: dumps() is read back by parse() as the same values

_names = st.from_regex(r"[A-Za-z][-A-Za-z0-9_]{0,8}", fullmatch=True)
_scalars = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20))
_groups = st.recursive(
    st.dictionaries(_names, _scalars, max_size=4),
    lambda children: st.dictionaries(_names, st.one_of(_scalars, children, st.lists(children, min_size=1, max_size=3)), max_size=4),
    max_leaves=12,
)


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {key: _plain(value[key]) for key in value}
    if isinstance(value, list):
        return [_plain(element) for element in value]
    return value


@settings(max_examples=200, deadline=None)
@given(_groups)
def test_dumps_is_read_back_as_the_same_values(values: dict[str, object]) -> None:
    assert _plain(parse(dumps(values))) == values
