"""A listener on "::" (media.ipv6) serves IPv6 and IPv4 clients; an IPv4 client's ACL prefix still matches."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from fanout.transports.listeners import Listener, acl_allows, serve


async def test_a_listener_on_every_ipv6_address_takes_ipv4_clients_too() -> None:
    seen: list[str | None] = []

    async def hello(request: web.Request) -> web.Response:
        seen.append(request.remote)
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    serving = await serve(app, [Listener("::", 0)])
    try:
        async with aiohttp.ClientSession() as http:
            for host in ("[::1]", "127.0.0.1"):
                async with http.get(f"http://{host}:{serving.port}/") as reply:
                    assert (reply.status, await reply.text()) == (200, "hello")
    finally:
        await serving.runner.cleanup()
    assert seen == ["::1", "::ffff:127.0.0.1"]  # what aiohttp reports; the ACL and guard read it as IPv4


def test_the_acl_matches_an_ipv4_client_of_a_dual_stack_listener() -> None:
    assert acl_allows(("127.",), "::ffff:127.0.0.1")
    assert not acl_allows(("10.",), "::ffff:127.0.0.1")
    assert acl_allows(("::1",), "::1")
