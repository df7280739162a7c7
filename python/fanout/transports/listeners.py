"""Where a transport listens: plain or TLS (https, wss) sockets, and the address ACLs.

A :class:`Listener` is one address and port, with the certificate files when
it speaks TLS (Janus's ``certificates`` group: ``cert_pem``, ``cert_key``,
``cert_pwd``, ``ciphers``). An ACL is Janus's list of address prefixes
(``acl = "127.,192.168.0."``): a client whose address starts with none of
them is refused; an empty list lets everyone in.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from aiohttp import web

from fanout.config.settings import TlsFiles


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    tls: TlsFiles | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


def ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    """A server context from PEM files (OSError or ssl.SSLError if they do not load)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_pem, tls.cert_key, password=tls.cert_pwd)
    if tls.ciphers:
        context.set_ciphers(tls.ciphers)
    return context


@dataclass
class Serving:
    """An application listening: its runner, and the port each listener got."""

    runner: web.AppRunner
    ports: list[int]
    port: int | None  # the first plain listener's
    secure_port: int | None  # the first TLS listener's


async def serve(app: web.Application, listeners: list[Listener]) -> Serving:
    """Run ``app`` on every listener (nothing is left open if one fails)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        ports = await open_sites(runner, listeners)
    except BaseException:
        await runner.cleanup()
        raise
    plain = [port for listener, port in zip(listeners, ports) if listener.tls is None]
    secure = [port for listener, port in zip(listeners, ports) if listener.tls is not None]
    return Serving(runner, ports, plain[0] if plain else None, secure[0] if secure else None)


async def open_sites(runner: web.AppRunner, listeners: list[Listener]) -> list[int]:
    """Start one site per listener on a set-up runner; the bound port of each, in order."""
    ports: list[int] = []
    for listener in listeners:
        context = ssl_context(listener.tls) if listener.tls is not None else None
        site = web.TCPSite(runner, listener.host, listener.port, ssl_context=context)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        ports.append(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    return ports


def acl_allows(acl: tuple[str, ...], address: str | None) -> bool:
    """Janus's ACL: the client's address must start with one of the prefixes (empty: anyone)."""
    if not acl:
        return True
    if address is None:
        return False
    return any(address.startswith(prefix) for prefix in acl)
