"""Writing Janus API messages as the transports' ``json`` setting asks (as Janus's jansson does)."""

from __future__ import annotations

import json
from typing import Any


def dumps(message: Any, style: str = "indented") -> str:
    """``indented`` (three spaces, Janus's default), ``plain`` (one line) or ``compact`` (no spaces)."""
    if style == "indented":
        return json.dumps(message, indent=3, ensure_ascii=False)
    if style == "compact":
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(message, ensure_ascii=False)
