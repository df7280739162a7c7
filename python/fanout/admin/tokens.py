"""Stored tokens (Janus's ``token_auth``): which tokens may use the Janus API, and which plugins each may attach to.

Tokens are added, changed and removed over the Admin API (``add_token``,
``allow_token``, ``disallow_token``, ``remove_token``, ``list_tokens``). As in
Janus, a token whose plugin list is emptied still authenticates the core API
but attaches to nothing, and ``list_tokens`` leaves it out.
"""

from __future__ import annotations


class TokenStore:
    """Tokens and their allowed plugins, newest first when listed (as Janus lists them)."""

    def __init__(self) -> None:
        self._tokens: dict[str, set[str]] = {}

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and token in self._tokens

    def add(self, token: str, plugins: list[str]) -> None:
        """Add ``token`` (again: a no-op) allowed to ``plugins``."""
        self._tokens.setdefault(token, set()).update(plugins)

    def remove(self, token: str) -> bool:
        return self._tokens.pop(token, None) is not None

    def allow(self, token: str, plugins: list[str]) -> None:
        self._tokens[token].update(plugins)

    def disallow(self, token: str, plugins: list[str]) -> None:
        self._tokens[token].difference_update(plugins)

    def allowed(self, token: str, plugin: str) -> bool:
        return plugin in self._tokens.get(token, ())

    def plugins_of(self, token: str, order: list[str]) -> list[str]:
        """The plugins ``token`` may attach to, in ``order`` (the server's plugin order)."""
        allowed = self._tokens.get(token, set())
        return [plugin for plugin in order if plugin in allowed]

    def listed(self) -> list[str]:
        """The tokens ``list_tokens`` shows: those allowed some plugin, newest first."""
        return [token for token in reversed(self._tokens) if self._tokens[token]]
