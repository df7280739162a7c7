"""WHIP (WebRTC-HTTP Ingestion Protocol, RFC 9725): a WebRTC publisher (OBS, a browser,
GStreamer) sends a ``whip`` mountpoint's streams.

A publisher POSTs its SDP offer to ``/whip/endpoint/<mountpoint id>`` (:mod:`routes`);
the offer is matched to the mountpoint's streams (:mod:`offer`) and answered
(:mod:`answer`); the publisher's ICE-lite and DTLS run on the shared WebRTC endpoint,
and once DTLS is up its media goes straight to the engine over a socket connected to
it (:mod:`publisher`). Viewers watch the mountpoint as any other.
"""
