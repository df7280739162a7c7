"""Reading JSON as Janus does: what jansson accepts, with jansson's error texts.

Janus parses every request with jansson and puts jansson's error text in its
454 errors (``JSON error: on line 1: '}' expected near end of file``). This
module accepts exactly what jansson accepts (an object or array at the top;
no ``NaN``; integers within 64 bits; no ``\\u0000``; no lone surrogates) and,
for anything else, raises :class:`JsonError` with jansson's message, line,
column and byte position. Well-formed input takes a fast path through the
standard library; only input that fails it (or uses ``\\u`` escapes) goes
through the character-by-character reader.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 2048
MAX_CONTEXT = 20
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
WHITESPACE = b" \t\n\r"
EOF = -1


@dataclass
class JsonError(Exception):
    """jansson's error: its text and where (1-based line, column in characters, byte position)."""

    text: str
    line: int
    column: int
    position: int

    def __str__(self) -> str:
        return self.text


def loads(data: bytes | str) -> Any:
    """One JSON object or array filling the whole input (jansson's ``json_loadb`` with no flags)."""
    raw = data.encode() if isinstance(data, str) else data
    value = _fast(raw)
    if value is not None:
        return value
    return _Parser(raw).document(eof_check=True)[0]


def loads_sequence(data: bytes | str) -> list[Any]:
    """Every JSON object or array in the input, one after the other (Janus's WebSocket transport:
    jansson with ``JSON_DISABLE_EOF_CHECK`` applied until the input is used up). The first error
    raises, with the line and column counted from where that value started."""
    raw = data.encode() if isinstance(data, str) else data
    trailing_space = bool(raw) and raw[-1] in WHITESPACE  # jansson then looks for one more value
    value = None if trailing_space else _fast(raw)
    if value is not None:
        return [value]
    values: list[Any] = []
    offset = 0
    while True:
        value, consumed = _Parser(raw[offset:]).document(eof_check=False)
        values.append(value)
        offset += consumed
        if offset >= len(raw):
            return values


def _fast(raw: bytes) -> dict[str, Any] | list[Any] | None:
    """The standard library's reading when jansson would surely agree; None to take the slow path."""
    if b"\\u" in raw:
        return None
    stripped = raw.lstrip(WHITESPACE)
    if not stripped or stripped[0] not in b"{[":
        return None
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject, parse_int=_int64, parse_float=_finite)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(value, (dict, list)):
        return None
    return value


def _reject(text: str) -> Any:
    raise ValueError(text)


def _int64(text: str) -> int:
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(text)
    return value


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(text)
    return value


def _utf8_length(first: int) -> int:
    """The length of the UTF-8 sequence that starts with ``first``, 0 if it cannot start one."""
    if first < 0x80:
        return 1
    if 0xC2 <= first <= 0xDF:
        return 2
    if 0xE0 <= first <= 0xEF:
        return 3
    if 0xF0 <= first <= 0xF4:
        return 4
    return 0


class _Stream:
    """jansson's input stream: bytes in, characters out, counting lines and columns."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0
        self.line = 1
        self.column = 0
        self.last_column = 0
        self.pending: list[int] = []  # rest of a multi-byte character already checked
        self.failed = False

    def get(self) -> int:
        if self.pending:
            byte = self.pending.pop(0)
            self.position += 1
            return byte
        if self.position >= len(self.data):
            return EOF
        byte = self.data[self.position]
        if byte >= 0x80:
            length = _utf8_length(byte)
            sequence = self.data[self.position : self.position + length]
            valid = length > 1 and len(sequence) == length
            if valid:
                try:
                    sequence.decode("utf-8")
                except UnicodeDecodeError:
                    valid = False
            if not valid:
                self.failed = True
                raise _DecodeError(byte)
            self.pending = list(sequence[1:])
        self.position += 1
        if byte == 0x0A:
            self.line += 1
            self.last_column = self.column
            self.column = 0
        else:
            self.column += 1
        return byte

    def unget(self, byte: int) -> None:
        if byte == EOF:
            return
        self.position -= 1
        self.pending = []  # a multi-byte character is read again whole
        if byte == 0x0A:
            self.line -= 1
            self.column = self.last_column
        elif _utf8_length(byte) != 0:
            self.column -= 1


class _DecodeError(Exception):
    def __init__(self, byte: int) -> None:
        self.byte = byte


STRING, INTEGER, REAL, TRUE, FALSE, NULL, INVALID, END = "string", "integer", "real", "true", "false", "null", "invalid", "eof"
_NO_VALUE: Any = object()


class _Parser:
    """jansson's lexer and parser, producing its exact error texts."""

    def __init__(self, data: bytes) -> None:
        self.stream = _Stream(data)
        self.saved = bytearray()
        self.token: str = INVALID
        self.value: Any = None
        self.depth = 0
        self.error: JsonError | None = None

    # -- errors: the first one set wins, as in jansson
    def fail(self, message: str) -> JsonError:
        if self.error is None:
            stream = self.stream
            if self.saved:
                text = self.saved.decode("utf-8", errors="replace")
                message = f"{message} near '{text}'" if len(self.saved) <= MAX_CONTEXT else message
            elif not stream.failed:
                message = f"{message} near end of file"
            self.error = JsonError(message, stream.line, stream.column, stream.position)
        return self.error

    # -- lexer
    def _get(self) -> int:
        try:
            return self.stream.get()
        except _DecodeError as error:
            raise self.fail(f"unable to decode byte 0x{error.byte:x}") from None

    def _get_save(self) -> int:
        char = self._get()
        if char != EOF:
            self.saved.append(char)
        return char

    def _unget_unsave(self, char: int) -> None:
        if char != EOF:
            self.stream.unget(char)
            del self.saved[-1]

    def _save_rest_of_character(self) -> None:
        while self.stream.pending:
            self.saved.append(self._get())

    def scan(self) -> None:
        self.saved.clear()
        self.value = None
        char = self._get()
        while char != EOF and char in WHITESPACE:
            char = self._get()
        if char == EOF:
            self.token = END
            return
        self.saved.append(char)
        if char in b"{}[]:,":
            self.token = chr(char)
        elif char == ord('"'):
            self._scan_string()
        elif _is_digit(char) or char == ord("-"):
            self._scan_number(char)
        elif chr(char).isascii() and chr(char).isalpha():
            char = self._get_save()
            while char != EOF and chr(char).isascii() and chr(char).isalpha():
                char = self._get_save()
            self._unget_unsave(char)
            word = bytes(self.saved)
            self.token = {b"true": TRUE, b"false": FALSE, b"null": NULL}.get(word, INVALID)
        else:
            self._save_rest_of_character()
            self.token = INVALID

    def _scan_string(self) -> None:
        self.token = INVALID
        char = self._get_save()
        while char != ord('"'):
            if char == EOF:
                raise self.fail("premature end of input")
            if 0 <= char <= 0x1F:
                self._unget_unsave(char)
                raise self.fail("unexpected newline" if char == 0x0A else f"control character 0x{char:x}")
            if char == ord("\\"):
                char = self._get_save()
                if char == ord("u"):
                    char = self._get_save()
                    for _ in range(4):
                        if char == EOF or chr(char) not in "0123456789abcdefABCDEF":
                            raise self.fail("invalid escape")
                        char = self._get_save()
                elif char != EOF and chr(char) in '"\\/bfnrt':
                    char = self._get_save()
                else:
                    raise self.fail("invalid escape")
            else:
                char = self._get_save()
        self.value = self._decode_string(bytes(self.saved[1:-1]))
        self.token = STRING

    def _decode_string(self, body: bytes) -> str:
        out: list[str] = []
        index = 0
        simple = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "/": "/"}
        text = body.decode("utf-8")
        while index < len(text):
            char = text[index]
            if char != "\\":
                out.append(char)
                index += 1
                continue
            escape = text[index + 1]
            if escape != "u":
                out.append(simple[escape])
                index += 2
                continue
            code = int(text[index + 2 : index + 6], 16)
            index += 6
            if 0xD800 <= code <= 0xDBFF:
                if text.startswith("\\u", index):
                    low = int(text[index + 2 : index + 6], 16)
                    if 0xDC00 <= low <= 0xDFFF:
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        index += 6
                    else:
                        raise self.fail(f"invalid Unicode '\\u{code:04X}\\u{low:04X}'")
                else:
                    raise self.fail(f"invalid Unicode '\\u{code:04X}'")
            elif 0xDC00 <= code <= 0xDFFF:
                raise self.fail(f"invalid Unicode '\\u{code:04X}'")
            out.append(chr(code))
        return "".join(out)

    def _scan_number(self, char: int) -> None:
        self.token = INVALID
        if char == ord("-"):
            char = self._get_save()
        if char == ord("0"):
            char = self._get_save()
            if _is_digit(char):
                self._unget_unsave(char)
                return
        elif _is_digit(char):
            char = self._get_save()
            while _is_digit(char):
                char = self._get_save()
        else:
            self._unget_unsave(char)
            return
        if char not in (ord("."), ord("e"), ord("E")):
            self._unget_unsave(char)
            value = int(self.saved)
            if value < INT64_MIN:
                raise self.fail("too big negative integer")
            if value > INT64_MAX:
                raise self.fail("too big integer")
            self.token, self.value = INTEGER, value
            return
        if char == ord("."):
            char = self._get()
            if not _is_digit(char):
                self.stream.unget(char)
                return
            self.saved.append(char)
            char = self._get_save()
            while _is_digit(char):
                char = self._get_save()
        if char in (ord("e"), ord("E")):
            char = self._get_save()
            if char in (ord("+"), ord("-")):
                char = self._get_save()
            if not _is_digit(char):
                self._unget_unsave(char)
                return
            char = self._get_save()
            while _is_digit(char):
                char = self._get_save()
        self._unget_unsave(char)
        real = float(self.saved)
        if math.isinf(real):
            raise self.fail("real number overflow")
        self.token, self.value = REAL, real

    # -- parser
    def document(self, *, eof_check: bool) -> tuple[Any, int]:
        self.scan()
        if self.token not in ("[", "{"):
            raise self.fail("'[' or '{' expected")
        value = self._value()
        if eof_check:
            self.scan()
            if self.token != END:
                raise self.fail("end of file expected")
        return value, self.stream.position

    def _value(self) -> Any:
        """The value that starts at the current token. Nested arrays and objects are kept on a
        stack of their own (not Python's: jansson nests 2048 deep)."""
        open_containers: list[tuple[dict[str, Any] | list[Any], str]] = []  # with the key being filled
        while True:
            token = self.token
            if token in ("{", "["):
                self.depth += 1
                if self.depth > MAX_DEPTH:
                    raise self.fail("maximum parsing depth reached")
                self.scan()
                if token == "{" and self.token != "}":
                    open_containers.append(({}, self._key()))
                    continue
                if token == "[" and self.token != "]":
                    open_containers.append(([], ""))
                    continue
                self.depth -= 1
                value: Any = {} if token == "{" else []
            else:
                value = self._scalar()
            while True:  # the value is whole: into its container; close the containers it completes
                if not open_containers:
                    return value
                container, key = open_containers[-1]
                if isinstance(container, dict):
                    container[key] = value
                else:
                    container.append(value)
                self.scan()
                if self.token == ",":
                    self.scan()
                    if isinstance(container, dict):
                        open_containers[-1] = (container, self._key())
                    break
                if isinstance(container, dict) and self.token != "}":
                    raise self.fail("'}' expected")
                if isinstance(container, list) and self.token != "]":
                    raise self.fail("']' expected")
                open_containers.pop()
                self.depth -= 1
                value = container

    def _scalar(self) -> Any:
        token = self.token
        if token == STRING:
            if "\0" in self.value:
                raise self.fail("\\u0000 is not allowed without JSON_ALLOW_NUL")
            return self.value
        if token in (INTEGER, REAL):
            return self.value
        if token in (TRUE, FALSE, NULL):
            return {TRUE: True, FALSE: False, NULL: None}[token]
        if token == INVALID:
            raise self.fail("invalid token")
        raise self.fail("unexpected token")

    def _key(self) -> str:
        """An object's key and its colon; leaves the scanner on the value's first token."""
        if self.token != STRING:
            raise self.fail("string or '}' expected")
        key: str = self.value
        if "\0" in key:
            raise self.fail("NUL byte in object key not supported")
        self.scan()
        if self.token != ":":
            raise self.fail("':' expected")
        self.scan()
        return key


def _is_digit(char: int) -> bool:
    return ord("0") <= char <= ord("9")
