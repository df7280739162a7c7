"""An RTSP 1.0 client (RFC 2326) that pulls a camera's or media server's stream.

Sans-IO, as :mod:`fanout.webrtc`: :mod:`~fanout.sources.rtsp.messages` writes
requests and parses responses, :mod:`~fanout.sources.rtsp.auth` answers Basic
and Digest challenges, :mod:`~fanout.sources.rtsp.description` reads the
tracks of a DESCRIBE's SDP, and :class:`~fanout.sources.rtsp.client.RtspClient`
walks OPTIONS, DESCRIBE, SETUP and PLAY, taking bytes and giving bytes and
events. :mod:`~fanout.sources.rtsp.connection` is the thin asyncio code that
carries those bytes over TCP. The media never passes through here: the server
sends RTP and RTCP straight to the ports the engine bound.
"""
