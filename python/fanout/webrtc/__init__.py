"""WebRTC transport for viewers: ICE-lite (STUN), DTLS-SRTP, SDP and RTCP, sans-IO; endpoint.py does the UDP I/O."""
