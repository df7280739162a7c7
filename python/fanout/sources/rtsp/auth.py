"""RTSP authentication (RFC 2326 section 16.8, RFC 2617): Basic and Digest.

A server answers 401 with one ``WWW-Authenticate`` header per scheme it takes;
:func:`authorization` picks Digest over Basic and writes the ``Authorization``
header for one request. Digest is MD5, with or without ``qop="auth"``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field

from fanout.sources.rtsp.messages import RtspError

_PARAMETER = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s"]*)\s*,?')


class RtspAuthError(RtspError):
    """The server wants credentials fanout does not have, or a scheme it does not speak."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` header: a scheme and its parameters (lower-case names)."""

    scheme: str  # lower case: "basic" | "digest" | ...
    parameters: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: str) -> Challenge:
        scheme, _, rest = value.strip().partition(" ")
        if not scheme:
            raise RtspAuthError("empty WWW-Authenticate header")
        parameters: dict[str, str] = {}
        if scheme.lower() not in ("basic", "digest"):
            return cls(scheme.lower())  # a scheme fanout does not answer: its parameters do not matter
        position = 0
        rest = rest.strip()
        while position < len(rest):
            matched = _PARAMETER.match(rest, position)
            if matched is None or matched.end() == position:
                raise RtspAuthError(f"invalid WWW-Authenticate parameters {rest[:80]!r}")
            raw = matched.group(2)
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            parameters[matched.group(1).lower()] = raw
            position = matched.end()
        return cls(scheme.lower(), parameters)


def authorization(
    challenges: list[Challenge], credentials: Credentials, method: str, uri: str, *, nonce_count: int = 1,
    cnonce: str | None = None,
) -> str:
    """The ``Authorization`` header answering the best of ``challenges`` for one request."""
    digest = next((challenge for challenge in challenges if challenge.scheme == "digest"), None)
    if digest is not None:
        return digest_authorization(digest, credentials, method, uri, nonce_count=nonce_count, cnonce=cnonce)
    if any(challenge.scheme == "basic" for challenge in challenges):
        token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
        return f"Basic {token}"
    schemes = ", ".join(challenge.scheme for challenge in challenges) or "none"
    raise RtspAuthError(f"the server asks for authentication fanout does not speak ({schemes})")


def digest_authorization(
    challenge: Challenge, credentials: Credentials, method: str, uri: str, *, nonce_count: int = 1,
    cnonce: str | None = None,
) -> str:
    realm = challenge.parameters.get("realm")
    nonce = challenge.parameters.get("nonce")
    if realm is None or nonce is None:
        raise RtspAuthError("Digest challenge without realm or nonce")
    algorithm = challenge.parameters.get("algorithm", "MD5")
    if algorithm.upper() != "MD5":
        raise RtspAuthError(f"Digest algorithm {algorithm} is not supported (only MD5)")
    qops = [qop.strip() for qop in challenge.parameters.get("qop", "").split(",") if qop.strip()]
    if qops and "auth" not in qops:
        raise RtspAuthError(f"Digest qop {qops} is not supported (only auth)")
    ha1 = _md5(f"{credentials.username}:{realm}:{credentials.password}")
    ha2 = _md5(f"{method}:{uri}")
    fields = [f'username="{credentials.username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if qops:
        cnonce = cnonce or secrets.token_hex(8)
        count = f"{nonce_count:08x}"
        response = _md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
        fields += [f'response="{response}"', "qop=auth", f"nc={count}", f'cnonce="{cnonce}"']
    else:
        fields.append(f'response="{_md5(f"{ha1}:{nonce}:{ha2}")}"')
    if "opaque" in challenge.parameters:
        fields.append(f'opaque="{challenge.parameters["opaque"]}"')
    if "algorithm" in challenge.parameters:
        fields.append(f"algorithm={algorithm}")
    return "Digest " + ", ".join(fields)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # Digest authentication is MD5 (RFC 2617)
