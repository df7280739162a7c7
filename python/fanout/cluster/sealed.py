"""The nodes' messages to each other, sealed under the cluster secret.

A sealed message is ``version (1 byte) || nonce (12 bytes) || AES-128-GCM ciphertext``;
the key is HKDF-SHA256 of the cluster secret, and the message's purpose (e.g.
``"relay"``) is its associated data, so a message sealed for one request cannot be
played as another. The plaintext is JSON: ``{"sent": <unix time>, "body": {...}}``.

:meth:`Sealer.open` refuses, with :class:`SealedRefused` (an HTTP status, a reason
for the log and a counter name):

- ``malformed`` (400): too short, an unknown version, or (sealed with our key, so by a
  node with the secret) a plaintext that is not the JSON object above;
- ``unauthentic`` (403): authentication fails: another secret, or forged or altered bytes;
- ``stale`` (403): sent more than ``max_age`` seconds ago, or as far in the future;
- ``replayed`` (403): its nonce was opened before (nonces are kept while fresh).

Nothing here reads a clock of its own: the caller passes ``now``.
"""

from __future__ import annotations

import json
import os
from collections import Counter, OrderedDict
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 1
NONCE_LENGTH = 12
TAG_LENGTH = 16
MAX_AGE_SECONDS = 30.0  # older (or this far ahead of our clock) is refused as stale
MAX_SEALED_LENGTH = 64 * 1024  # a relay request is a few hundred bytes
MAX_REMEMBERED_NONCES = 100_000  # only holders of the secret can add to it; bounded all the same
_HKDF_SALT = b"fanout cluster"
_HKDF_INFO = b"fanout sealed messages v1"
CONTENT_TYPE = "application/x-fanout-sealed"


class SealedRefused(Exception):
    """A message that :meth:`Sealer.open` will not take."""

    def __init__(self, kind: str, status: int, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind  # malformed | unauthentic | stale | replayed: the counter it goes to
        self.status = status  # the HTTP status to answer it with
        self.reason = reason


def derive_key(secret: str) -> bytes:
    """The 16-byte AES key of a cluster secret."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=16, salt=_HKDF_SALT, info=_HKDF_INFO)
    return hkdf.derive(secret.encode("utf-8"))


class Sealer:
    """Seals and opens the messages of one node; remembers the nonces it opened."""

    def __init__(self, secret: str, *, max_age: float = MAX_AGE_SECONDS) -> None:
        if not secret:
            raise ValueError("the cluster secret is empty")
        self._aead = AESGCM(derive_key(secret))
        self.max_age = max_age
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # nonce -> when it was sent, oldest first
        self.refusals: Counter[str] = Counter()  # by kind
        self.opened = 0

    def seal(self, purpose: str, body: dict[str, Any], now: float) -> bytes:
        nonce = os.urandom(NONCE_LENGTH)
        plaintext = json.dumps({"sent": now, "body": body}, separators=(",", ":")).encode()
        return bytes([VERSION]) + nonce + self._aead.encrypt(nonce, plaintext, purpose.encode())

    def open(self, purpose: str, sealed: bytes, now: float) -> dict[str, Any]:
        """The body of a message sealed for ``purpose``; SealedRefused (counted) if it is not one."""
        try:
            body = self._open(purpose, sealed, now)
        except SealedRefused as refused:
            self.refusals[refused.kind] += 1
            raise
        self.opened += 1
        return body

    def _open(self, purpose: str, sealed: bytes, now: float) -> dict[str, Any]:
        if len(sealed) < 1 + NONCE_LENGTH + TAG_LENGTH:
            raise SealedRefused("malformed", 400, f"a sealed message of {len(sealed)} bytes is too short")
        if len(sealed) > MAX_SEALED_LENGTH:
            raise SealedRefused("malformed", 400, f"a sealed message of {len(sealed)} bytes is too long")
        if sealed[0] != VERSION:
            raise SealedRefused("malformed", 400, f"unknown sealed message version {sealed[0]}")
        nonce = sealed[1 : 1 + NONCE_LENGTH]
        try:
            plaintext = self._aead.decrypt(nonce, sealed[1 + NONCE_LENGTH :], purpose.encode())
        except InvalidTag:
            raise SealedRefused(
                "unauthentic", 403, "the message does not open with this node's cluster secret (another secret, or forged)"
            ) from None
        try:
            message = json.loads(plaintext)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past the parser's depth
            message = None
        if not isinstance(message, dict):
            raise SealedRefused("malformed", 400, "the sealed message holds no JSON object")
        sent, body = message.get("sent"), message.get("body")
        if isinstance(sent, bool) or not isinstance(sent, (int, float)) or not isinstance(body, dict):
            raise SealedRefused("malformed", 400, "the sealed message lacks 'sent' (a time) or 'body' (an object)")
        if not abs(now - sent) <= self.max_age:  # "not <=": a NaN is stale too
            raise SealedRefused("stale", 403, f"the message was sent {now - sent:.1f} s from now (at most {self.max_age:g} s)")
        self._forget_stale_nonces(now)
        if nonce in self._seen:
            raise SealedRefused("replayed", 403, "the message was opened before (a replay)")
        if len(self._seen) >= MAX_REMEMBERED_NONCES:
            self._seen.popitem(last=False)
        self._seen[nonce] = float(sent)
        return body

    def _forget_stale_nonces(self, now: float) -> None:
        """A nonce older than max_age needs no remembering: its message is stale anyway."""
        while self._seen:
            nonce, sent = next(iter(self._seen.items()))
            if now - sent <= self.max_age:
                return
            del self._seen[nonce]
