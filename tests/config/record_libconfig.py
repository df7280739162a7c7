"""Record what the real libconfig (the library Janus reads .jcfg files with) says about
the snippets in tests/config/data/libconfig_cases.json: accepted with which values, or
rejected at which line. Needs libconfig.so.9 (Debian: libconfig9, installed with janus).

    .venv/bin/python tests/config/record_libconfig.py
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data" / "libconfig_cases.json"

# libconfig 1.5's config_t on x86_64: error_text at offset 32, error_line at 48.
CONFIG_T_SIZE = 1024
ERROR_TEXT_OFFSET = 32
ERROR_LINE_OFFSET = 48


def libconfig_verdict(library: ctypes.CDLL, text: str, paths: list[str]) -> dict[str, Any]:
    config = ctypes.create_string_buffer(CONFIG_T_SIZE)
    library.config_init(config)
    if not library.config_read_string(config, text.encode()):
        error = ctypes.c_char_p.from_buffer(config, ERROR_TEXT_OFFSET).value
        return {"ok": False, "line": ctypes.c_int.from_buffer(config, ERROR_LINE_OFFSET).value,
                "libconfig_error": error.decode() if error else None}
    values: dict[str, Any] = {}
    for path in paths:
        string, integer, real, boolean = ctypes.c_char_p(), ctypes.c_longlong(), ctypes.c_double(), ctypes.c_int()
        key = path.encode()
        if library.config_lookup_string(config, key, ctypes.byref(string)):
            values[path] = string.value.decode() if string.value is not None else None
        elif library.config_lookup_int64(config, key, ctypes.byref(integer)):
            values[path] = integer.value
        elif library.config_lookup_float(config, key, ctypes.byref(real)):
            values[path] = real.value
        elif library.config_lookup_bool(config, key, ctypes.byref(boolean)):
            values[path] = bool(boolean.value)
        else:
            values[path] = None
    library.config_destroy(config)
    return {"ok": True, "values": values}


def main() -> None:
    library = ctypes.CDLL("libconfig.so.9")
    library.config_read_string.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    for name in ("string", "int64", "float", "bool"):
        getattr(library, f"config_lookup_{name}").argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    cases = json.loads(DATA.read_text())
    for case in cases:
        case["libconfig"] = libconfig_verdict(library, case["text"], case.get("paths", []))
    DATA.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
