"""A real RTSP server for the tests: GStreamer's gst-rtsp-server through Python GI.

Run it with the system Python (``/usr/bin/python3``, which has ``python3-gi`` and
``gir1.2-gst-rtsp-server-1.0``), not the virtualenv's::

    /usr/bin/python3 tests/support/gst_rtsp_server.py --port 8554 --codec vp8 [--audio] [--user U --password P [--digest]]
        [--transport udp|tcp|both] [--tls CERT.pem KEY.pem]

It serves a live 320x240 test pattern at ``rtsp://127.0.0.1:<port>/stream``
(and with ``--audio`` an Opus tone after it): VP8, or H.264 with ``config-interval=0`` so that its SPS and PPS travel only in
the SDP's sprop-parameter-sets (as many cameras do). Prints ``rtsp-server: ready``
once it listens, ``rtsp-server: teardown`` for each TEARDOWN; SIGTERM stops it.
``--transport`` is the lower transports it takes (UDP by default: a SETUP asking for
another is answered 461); ``--tls`` serves RTSP over TLS (``rtsps://``) with that
certificate and key.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PATTERN = "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1"
VIDEO = {
    "vp8": f"{PATTERN} ! vp8enc deadline=1 keyframe-max-dist=30 target-bitrate=500000 ! rtpvp8pay name=pay0 pt=96 mtu=1200",
    "h264": f"{PATTERN} ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=500 key-int-max=30 "
    "! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 mtu=1200 config-interval=0",
}
TRANSPORTS = {
    "udp": GstRtsp.RTSPLowerTrans.UDP,
    "tcp": GstRtsp.RTSPLowerTrans.TCP,
    "both": GstRtsp.RTSPLowerTrans.UDP | GstRtsp.RTSPLowerTrans.TCP,
}
AUDIO = "audiotestsrc is-live=true ! audioconvert ! audioresample ! opusenc ! rtpopuspay name=pay1 pt=111"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--codec", choices=sorted(VIDEO), default="vp8")
    parser.add_argument("--audio", action="store_true", help="an Opus tone as a second track")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--digest", action="store_true", help="Digest authentication rather than Basic")
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="udp")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="RTSP over TLS with this certificate and key")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {VIDEO[args.codec]} {AUDIO if args.audio else ''} )")
    factory.set_shared(True)
    factory.set_protocols(TRANSPORTS[args.transport])
    auth = GstRtspServer.RTSPAuth() if args.user or args.tls else None
    if args.tls:
        assert auth is not None
        auth.set_tls_certificate(Gio.TlsCertificate.new_from_files(*args.tls))
        if not args.user:  # anyone may watch: a default token with the factory's role
            token = GstRtspServer.RTSPToken()
            token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
            auth.set_default_token(token)
        server.set_auth(auth)
    if args.user:
        assert auth is not None
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        if args.digest:
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(args.user, args.password, token)
        else:
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        permissions.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(permissions)
    if args.tls and not args.user:
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        permissions.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/stream", factory)

    def client_connected(_server: object, client: GstRtspServer.RTSPClient) -> None:
        client.connect("teardown-request", lambda *_: print("rtsp-server: teardown", flush=True))

    server.connect("client-connected", client_connected)
    if server.attach(None) == 0:
        sys.exit(f"rtsp-server: cannot listen on port {args.port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print("rtsp-server: ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
