"""TLS (https, wss, and the Admin API's secure ports) from certificate files, and address ACLs,
through the real transports (in-process, over a Gateway on the fakes)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fanout.admin.api import AdminApi
from fanout.config.settings import HttpSettings, Settings, TlsFiles, WebSocketSettings
from fanout.transports.admin import AdminHttpTransport, AdminWebSocketTransport
from fanout.transports.http import HttpTransport
from fanout.transports.websocket import WebSocketTransport

from tests.core.harness import Core


def self_signed(folder: Path) -> TlsFiles:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem, key_path = folder / "cert.pem", folder / "key.pem"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return TlsFiles(str(pem), str(key_path))


def client_context(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.cert_pem)
    return context


async def test_https_wss_and_secure_admin_ports(tmp_path: Path) -> None:
    tls = self_signed(tmp_path)
    http_settings = HttpSettings(
        enabled=False, https=True, secure_host="127.0.0.1", secure_port=0, tls=tls,
        admin_https=True, admin_secure_host="127.0.0.1", admin_secure_port=0,
    )
    ws_settings = WebSocketSettings(
        enabled=False, wss=True, wss_host="127.0.0.1", wss_port=0, tls=tls,
        admin_wss=True, admin_wss_host="127.0.0.1", admin_wss_port=0,
    )
    core = Core(settings=Settings(admin_secret="a", http=http_settings, websocket=ws_settings))
    admin = AdminApi(core.gateway)
    transports = [
        HttpTransport(core.gateway, http_settings),
        WebSocketTransport(core.gateway, ws_settings),
        AdminHttpTransport(admin, http_settings),
        AdminWebSocketTransport(admin, ws_settings),
    ]
    for transport in transports:
        await transport.start()
    janus_http, janus_ws, admin_http, admin_ws = transports
    context = client_context(tls)
    try:
        assert janus_http.port is None and janus_ws.port is None  # http = false, ws = false
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
            async with http.post(f"https://localhost:{janus_http.secure_port}/janus", data='{"janus":"create","transaction":"c"}') as response:
                session_id = (await response.json(content_type=None))["data"]["id"]
            async with http.ws_connect(f"wss://localhost:{janus_ws.secure_port}/", protocols=("janus-protocol",)) as socket:
                await socket.send_str('{"janus":"ping","transaction":"p"}')
                assert json.loads((await socket.receive()).data) == {"janus": "pong", "transaction": "p"}
            body = '{"janus":"list_sessions","transaction":"l","admin_secret":"a"}'
            async with http.post(f"https://localhost:{admin_http.secure_port}/admin", data=body) as response:
                assert (await response.json(content_type=None))["sessions"] == [session_id]
            async with http.ws_connect(f"wss://localhost:{admin_ws.secure_port}/", protocols=("janus-admin-protocol",)) as socket:
                await socket.send_str(body)
                assert json.loads((await socket.receive()).data)["sessions"] == [session_id]
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # our certificate is not trusted by default
                await http.post(f"https://localhost:{janus_http.secure_port}/janus", data="{}")
    finally:
        for transport in reversed(transports):
            await transport.stop()


async def test_acls_refuse_other_addresses() -> None:
    """Janus's ACLs are address prefixes: 127. lets loopback in, 10. keeps it out."""
    settings = Settings(
        http=HttpSettings(host="127.0.0.1", port=0, acl=("10.",), admin_http=True, admin_host="127.0.0.1", admin_port=0, admin_acl=("127.",)),
        websocket=WebSocketSettings(host="127.0.0.1", port=0, acl=("192.168.",), admin_ws=True, admin_host="127.0.0.1", admin_port=0, admin_acl=("10.",)),
    )
    core = Core(settings=settings)
    admin = AdminApi(core.gateway)
    transports = [
        HttpTransport(core.gateway, settings.http),
        WebSocketTransport(core.gateway, settings.websocket),
        AdminHttpTransport(admin, settings.http),
        AdminWebSocketTransport(admin, settings.websocket),
    ]
    for transport in transports:
        await transport.start()
    janus_http, janus_ws, admin_http, admin_ws = transports
    ping = '{"janus":"ping","transaction":"p"}'
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{janus_http.port}/janus", data=ping) as response:
                assert response.status == 403
            async with http.post(f"http://127.0.0.1:{admin_http.port}/admin", data=ping) as response:
                assert (response.status, (await response.json(content_type=None))["janus"]) == (200, "pong")
            for transport, protocol in ((janus_ws, "janus-protocol"), (admin_ws, "janus-admin-protocol")):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(f"ws://127.0.0.1:{transport.port}/", protocols=(protocol,))
                assert refused.value.status == 403
    finally:
        for transport in reversed(transports):
            await transport.stop()


def test_tls_files_come_from_the_transport_files(tmp_path: Path) -> None:
    from fanout.config.jcfg import parse
    from fanout.config.settings import read_settings

    tls = self_signed(tmp_path)
    http = parse(
        f'general: {{ https = true; secure_port = 8443 }}\ncertificates: {{ cert_pem = "{tls.cert_pem}"; cert_key = "{tls.cert_key}" }}',
        "janus.transport.http.jcfg",
    )
    settings, _ = read_settings(parse("", "janus.jcfg"), http, None, detect_ips=lambda: ["127.0.0.1"])
    assert dataclasses.astuple(settings.http)[:3] == (True, "0.0.0.0", 8088)
    assert (settings.http.https, settings.http.secure_port, settings.http.tls) == (True, 8443, tls)
