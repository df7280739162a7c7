"""A reader for the libconfig syntax of Janus's ``.jcfg`` files.

Accepts what libconfig accepts: settings ``name = value`` or ``name: value``
ended by an optional ``;`` or ``,``; groups ``{ ... }``, lists ``( ... )``,
arrays ``[ ... ]`` of scalars of one type; strings with escapes (``\\n``,
``\\t``, ``\\xNN``, ...; an unknown one stays as written) where adjacent
strings are joined; integers in
decimal, hex (``0x``), binary (``0b``) or octal (``0o``), optionally with
libconfig's 64-bit ``L`` suffix; floats; booleans ``true``/``false`` in any
case; comments ``#``, ``//`` and ``/* */``; ``@include "file"`` (a relative
path is taken from the including file's folder).

A parsed file is a :class:`Group`: a read-only mapping that remembers which
keys were read, so a program can report every setting it ignored
(:meth:`Group.unread`). Every error names the file and the line:
``ConfigError("janus.jcfg:12: expected '=' or ':' after 'port'")``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Union

Value = Union[str, int, float, bool, "Group", "ConfigList"]

TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")
MAX_INCLUDE_DEPTH = 10


class ConfigError(ValueError):
    """A configuration file fanout cannot use; the message starts with ``file:line:``."""


@dataclass(frozen=True)
class Location:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class ConfigList(list[Value]):
    """A libconfig list ``( ... )`` or array ``[ ... ]``, with where each element was written."""

    def __init__(self, values: list[Value], locations: list[Location], location: Location, path: str) -> None:
        super().__init__(values)
        self.locations = locations
        self.location = location
        self.path = path


class Group(Mapping[str, Value]):
    """A libconfig group (or a whole file): settings by name, in file order.

    Reading a key (``group[key]``, ``get``, the typed getters) marks it read;
    ``key in group`` and iterating do not. :meth:`unread` lists, by dotted
    path, every scalar setting under this group that nobody read.
    """

    def __init__(self, path: str, location: Location) -> None:
        self.path = path  # dotted path from the file's root, "" for the root
        self.location = location
        self._values: dict[str, Value] = {}
        self._locations: dict[str, Location] = {}
        self._read: set[str] = set()

    # Mapping
    def __getitem__(self, key: str) -> Value:
        value = self._values[key]
        self._read.add(key)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Group({self.path or '<root>'!r}, {self._values!r})"

    @property
    def file(self) -> str:
        return self.location.file

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def location_of(self, key: str) -> Location:
        return self._locations.get(key, self.location)

    def mark_read(self, key: str) -> None:
        """Count a key as used without reading it (a caller that handles it otherwise)."""
        if key in self._values:
            self._read.add(key)

    def unread(self) -> list[str]:
        """Dotted paths of the settings nobody read, in file order, e.g. ``general.debug_level``.

        A group counts through its members (an empty group has nothing to
        report); a list of groups through the groups (``media[0].label``)."""
        found: list[str] = []
        for key, value in self._values.items():
            if isinstance(value, Group):
                found.extend(value.unread())
            elif isinstance(value, ConfigList) and value and all(isinstance(v, Group) for v in value):
                for element in value:
                    assert isinstance(element, Group)
                    found.extend(element.unread())
            elif key not in self._read:
                found.append(self.key_path(key))
        return found

    # Typed getters: a missing key gives the default; a wrong type raises ConfigError naming file:line.
    def get_str(self, key: str, default: str | None = None) -> str | None:
        if key not in self._values:
            return default
        value = self[key]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self._type_error(key, "a string")
        return value if isinstance(value, str) else str(value)

    def get_int(self, key: str, default: int | None = None) -> int | None:
        if key not in self._values:
            return default
        value = self[key]
        if isinstance(value, bool):
            raise self._type_error(key, "an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]+\s*", value):
            return int(value)
        raise self._type_error(key, "an integer")

    def get_float(self, key: str, default: float | None = None) -> float | None:
        if key not in self._values:
            return default
        value = self[key]
        if isinstance(value, bool):
            raise self._type_error(key, "a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise self._type_error(key, "a number")

    def get_bool(self, key: str, default: bool | None = None) -> bool | None:
        """A boolean; as in Janus, the strings and integers ``yes``/``no``, ``1``/``0`` also count."""
        if key not in self._values:
            return default
        value = self[key]
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            word = str(value).strip().lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
        raise self._type_error(key, "true or false")

    def get_group(self, key: str) -> Group | None:
        if key not in self._values:
            return None
        value = self[key]
        if not isinstance(value, Group):
            raise self._type_error(key, "a group { ... }")
        return value

    def get_list(self, key: str) -> ConfigList | None:
        if key not in self._values:
            return None
        value = self[key]
        if not isinstance(value, ConfigList):
            raise self._type_error(key, "a list ( ... ) or array [ ... ]")
        return value

    def groups(self) -> Iterator[tuple[str, Group]]:
        """The members that are groups, by name, in file order (not marked read)."""
        for key, value in self._values.items():
            if isinstance(value, Group):
                yield key, value

    def _type_error(self, key: str, expected: str) -> ConfigError:
        value = self._values[key]
        return ConfigError(f"{self.location_of(key)}: {self.key_path(key)} must be {expected}, not {describe(value)}")

    def _set(self, key: str, value: Value, location: Location) -> None:
        if key in self._values:
            raise ConfigError(f"{location}: duplicate setting '{key}' (first at line {self._locations[key].line})")
        self._values[key] = value
        self._locations[key] = location


def describe(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Group):
        return "a group"
    if isinstance(value, ConfigList):
        return "a list"
    return str(value)


# ---------------------------------------------------------------------------
# Lexer

@dataclass(frozen=True)
class Token:
    kind: str  # "name", "string", "integer", "float", "boolean", "punct", "include", "eof"
    text: str
    value: str | int | float | bool | None
    location: Location

    def describe(self) -> str:
        if self.kind == "eof":
            return "end of file"
        return f"'{self.text}'"


_NUMBER = re.compile(
    r"""
    (?P<hex>0[xX][0-9A-Fa-f]+)(?P<hexlong>L{1,2})?(?![-\w*.])
  | (?P<bin>0[bB][01]+)(?P<binlong>L{1,2})?(?![-\w*.])
  | (?P<oct>0[oOqQ][0-7]+)(?P<octlong>L{1,2})?(?![-\w*.])
  | (?P<float>[-+]?(?:[0-9]*\.[0-9]*(?:[eE][-+]?[0-9]+)?|[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+))(?![-\w*.])
  | (?P<int>[-+]?[0-9]+)(?P<intlong>L{1,2})?(?![-\w*.])
    """,
    re.VERBOSE,
)
_NAME = re.compile(r"[A-Za-z*][-A-Za-z0-9_*]*")
_BOOLEAN = re.compile(r"(?i:true|false)(?![-\w*])")
_INCLUDE = re.compile(r'@include[ \t]+"((?:[^"\\\n]|\\.)*)"')
_STRING_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t", "f": "\f"}
_PUNCTUATION = "=:;,{}()[]"


class _Lexer:
    """Tokens of one file's text."""

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename
        self.position = 0
        self.line = 1

    def _location(self) -> Location:
        return Location(self.filename, self.line)

    def _error(self, message: str, line: int | None = None) -> ConfigError:
        return ConfigError(f"{self.filename}:{line if line is not None else self.line}: {message}")

    def _skip_space_and_comments(self) -> None:
        text = self.text
        while self.position < len(text):
            char = text[self.position]
            if char == "\n":
                self.line += 1
                self.position += 1
            elif char in " \t\r\f\v":
                self.position += 1
            elif char == "#" or text.startswith("//", self.position):
                end = text.find("\n", self.position)
                self.position = len(text) if end < 0 else end
            elif text.startswith("/*", self.position):
                end = text.find("*/", self.position + 2)
                if end < 0:
                    raise self._error("unterminated comment /* ... */")
                self.line += text.count("\n", self.position, end)
                self.position = end + 2
            else:
                return

    def next(self) -> Token:
        self._skip_space_and_comments()
        text = self.text
        location = self._location()
        if self.position >= len(text):
            return Token("eof", "", None, location)
        char = text[self.position]
        if char in _PUNCTUATION:
            self.position += 1
            return Token("punct", char, char, location)
        if char == '"':
            return self._string(location)
        if char == "@":
            match = _INCLUDE.match(text, self.position)
            if match is None:
                raise self._error('expected @include "file"')
            self.position = match.end()
            return Token("include", match.group(0), _unescape(match.group(1), self._error), location)
        boolean = _BOOLEAN.match(text, self.position)
        if boolean:
            self.position = boolean.end()
            return Token("boolean", boolean.group(0), boolean.group(0).lower() == "true", location)
        if char in "+-.0123456789":
            return self._number(location)
        name = _NAME.match(text, self.position)
        if name:
            self.position = name.end()
            return Token("name", name.group(0), name.group(0), location)
        raise self._error(f"unexpected character {char!r}")

    def _string(self, location: Location) -> Token:
        text = self.text
        end = self.position + 1
        while True:
            if end >= len(text):
                raise self._error("unterminated string", location.line)
            char = text[end]
            if char == "\\":
                end += 2
                continue
            if char == '"':
                break
            end += 1
        raw = text[self.position + 1 : end]
        self.line += raw.count("\n")
        self.position = end + 1
        return Token("string", f'"{raw}"', _unescape(raw, self._error), location)

    def _number(self, location: Location) -> Token:
        match = _NUMBER.match(self.text, self.position)
        if match is None:
            word = re.match(r"[-+.\w*]+", self.text[self.position :])
            raise self._error(f"invalid number '{word.group(0) if word else self.text[self.position]}'")
        self.position = match.end()
        groups = match.groupdict()
        if groups["float"] is not None:
            if groups["float"].strip("+-") == ".":
                raise self._error(f"invalid number '{groups['float']}'")
            return Token("float", match.group(0), float(groups["float"]), location)
        for kind, base in (("hex", 16), ("bin", 2), ("oct", 8)):
            digits = groups[kind]
            if digits is not None:
                return Token("integer", match.group(0), int(digits[2:], base), location)
        return Token("integer", match.group(0), int(groups["int"]), location)


def _unescape(raw: str, error: Callable[[str], ConfigError]) -> str:
    if "\\" not in raw:
        return raw
    out: list[str] = []
    index = 0
    while index < len(raw):
        char = raw[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        escape = raw[index + 1]
        if escape == "x":
            digits = raw[index + 2 : index + 4]
            if not re.fullmatch(r"[0-9A-Fa-f]{2}", digits):
                raise error(f"invalid escape '\\x{digits}' in string (expected two hex digits)")
            out.append(chr(int(digits, 16)))
            index += 4
            continue
        out.append(_STRING_ESCAPES.get(escape, "\\" + escape))  # as libconfig: an unknown escape stays as written
        index += 2
    return "".join(out)


# ---------------------------------------------------------------------------
# Parser

class _Parser:
    """libconfig's grammar over the tokens of a file and the files it includes."""

    def __init__(self, text: str, filename: str, folder: Path | None) -> None:
        self.lexers = [_Lexer(text, filename)]
        self.folders = [folder]
        self.pending: Token | None = None

    def _next(self) -> Token:
        if self.pending is not None:
            token, self.pending = self.pending, None
            return token
        while True:
            token = self.lexers[-1].next()
            if token.kind == "include":
                self._include(token)
                continue
            if token.kind == "eof" and len(self.lexers) > 1:
                self.lexers.pop()
                self.folders.pop()
                continue
            return token

    def _peek(self) -> Token:
        if self.pending is None:
            self.pending = self._next()
        return self.pending

    def _include(self, token: Token) -> None:
        assert isinstance(token.value, str)
        if len(self.lexers) > MAX_INCLUDE_DEPTH:
            raise ConfigError(f"{token.location}: @include nested too deeply")
        folder = self.folders[-1]
        path = Path(token.value)
        if not path.is_absolute() and folder is not None:
            path = folder / path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{token.location}: cannot include '{token.value}': {error.strerror or error}") from error
        self.lexers.append(_Lexer(text, path.name))
        self.folders.append(path.parent)

    def _error(self, token: Token, message: str) -> ConfigError:
        return ConfigError(f"{token.location}: {message}")

    def parse_file(self, filename: str) -> Group:
        root = Group("", Location(filename, 1))
        while self._peek().kind != "eof":
            self._setting(root)
        return root

    def _setting(self, group: Group) -> None:
        name = self._next()
        if name.kind != "name":
            if name.kind == "punct" and name.text == "}":
                raise self._error(name, "unexpected '}' (no group is open)")
            raise self._error(name, f"expected a setting name, found {name.describe()}")
        separator = self._next()
        if not (separator.kind == "punct" and separator.text in "=:"):
            raise self._error(separator, f"expected '=' or ':' after '{name.text}'")
        value = self._value(group.key_path(name.text), name.text)
        group._set(name.text, value, name.location)
        terminator = self._peek()
        if terminator.kind == "punct" and terminator.text in ";,":
            self._next()

    def _value(self, path: str, name: str) -> Value:
        token = self._next()
        if token.kind == "punct" and token.text == "{":
            group = Group(path, token.location)
            while not self._accept("}"):
                if self._peek().kind == "eof":
                    raise self._error(self._peek(), f"unexpected end of file in group '{name}' (opened at line {token.location.line}), expected '}}'")
                self._setting(group)
            return group
        if token.kind == "punct" and token.text in "([":
            return self._sequence(token, path, name)
        return self._scalar(token, name)

    def _sequence(self, opening: Token, path: str, name: str) -> ConfigList:
        closing = ")" if opening.text == "(" else "]"
        kind = "list" if closing == ")" else "array"
        values: list[Value] = []
        locations: list[Location] = []
        if not self._accept(closing):
            while True:
                element = self._peek()
                if element.kind == "eof":
                    raise self._eof_in_sequence(element, kind, name, opening, closing)
                element_path = f"{path}[{len(values)}]"
                if kind == "array":
                    if element.kind == "punct" and element.text in "{([":
                        raise self._error(element, f"an array [ ... ] holds only scalars ('{name}'); use a list ( ... )")
                    value = self._scalar(self._next(), name)
                    if values and _scalar_type(value) != _scalar_type(values[0]):
                        raise self._error(element, f"mixed types in array '{name}' (an array holds scalars of one type; use a list ( ... ))")
                else:
                    value = self._value(element_path, f"{name}[{len(values)}]")
                values.append(value)
                locations.append(element.location)
                if self._accept(closing):
                    break
                separator = self._next()
                if separator.kind == "eof":
                    raise self._eof_in_sequence(separator, kind, name, opening, closing)
                if not (separator.kind == "punct" and separator.text == ","):
                    raise self._error(separator, f"expected ',' or '{closing}' in {kind} '{name}', found {separator.describe()}")
        return ConfigList(values, locations, opening.location, path)

    def _eof_in_sequence(self, token: Token, kind: str, name: str, opening: Token, closing: str) -> ConfigError:
        return self._error(
            token, f"unexpected end of file in {kind} '{name}' (opened at line {opening.location.line}), expected '{closing}'"
        )

    def _scalar(self, token: Token, name: str) -> Value:
        if token.kind == "string":
            assert isinstance(token.value, str)
            parts = [token.value]
            while self._peek().kind == "string":
                following = self._next()
                assert isinstance(following.value, str)
                parts.append(following.value)
            return "".join(parts)
        if token.kind in ("integer", "float", "boolean"):
            assert isinstance(token.value, (int, float, bool))
            return token.value
        if token.kind == "eof":
            raise self._error(token, f"unexpected end of file, expected a value for '{name}'")
        raise self._error(token, f"expected a value for '{name}', found {token.describe()}")

    def _accept(self, punctuation: str) -> bool:
        token = self._peek()
        if token.kind == "punct" and token.text == punctuation:
            self._next()
            return True
        return False


def _scalar_type(value: Value) -> type:
    return type(value)


def parse(text: str, filename: str = "<string>", folder: Path | None = None) -> Group:
    """Parse libconfig text; ``folder`` resolves relative ``@include`` paths."""
    return _Parser(text, filename, folder).parse_file(filename)


def load(path: Path | str) -> Group:
    """Read and parse one ``.jcfg`` file; errors name it by its file name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path.name}:{text_line_of(path, error.start)}: not valid UTF-8") from error
    except OSError as error:
        raise ConfigError(f"{path.name}: cannot read: {error.strerror or error}") from error
    return parse(text, path.name, path.parent)


def text_line_of(path: Path, offset: int) -> int:
    return path.read_bytes()[:offset].count(b"\n") + 1


_VALID_NAME = re.compile(r"[A-Za-z*][-A-Za-z0-9_*]*\Z")


def is_setting_name(name: str) -> bool:
    """Whether ``name`` can name a setting or group in a libconfig file."""
    return _VALID_NAME.match(name) is not None


def dumps(settings: Mapping[str, object]) -> str:
    """libconfig text for ``settings`` (nested mappings become groups, lists become lists);
    what :func:`parse` reads back as the same values."""
    lines: list[str] = []
    _dump_settings(settings, lines, indent=0)
    return "\n".join(lines) + "\n"


def _dump_settings(settings: Mapping[str, object], lines: list[str], indent: int) -> None:
    pad = "\t" * indent
    for name, value in settings.items():
        if not is_setting_name(name):
            raise ValueError(f"'{name}' cannot name a setting in a .jcfg file")
        if isinstance(value, Mapping):
            lines.append(f"{pad}{name}: {{")
            _dump_settings(value, lines, indent + 1)
            lines.append(f"{pad}}}")
        elif isinstance(value, list):
            lines.append(f"{pad}{name} = (")
            for position, element in enumerate(value):
                comma = "," if position < len(value) - 1 else ""
                if isinstance(element, Mapping):
                    lines.append(f"{pad}\t{{")
                    _dump_settings(element, lines, indent + 2)
                    lines.append(f"{pad}\t}}{comma}")
                else:
                    lines.append(f"{pad}\t{_scalar_text(element)}{comma}")
            lines.append(f"{pad})")
        else:
            lines.append(f"{pad}{name} = {_scalar_text(value)}")


def _scalar_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_escaped(char) for char in value) + '"'
    raise ValueError(f"{value!r} cannot be written to a .jcfg file")


_ESCAPES_OF = {char: "\\" + escape for escape, char in _STRING_ESCAPES.items()}


def _escaped(char: str) -> str:
    if char in _ESCAPES_OF:
        return _ESCAPES_OF[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x20 else char
