"""WHEP (WebRTC-HTTP Egress Protocol): standard players watch mountpoints over plain HTTP.

A WHEP player POSTs its SDP offer to ``/whep/endpoint/<mountpoint id>`` and gets
the answer and a resource URL; it may PATCH trickled candidates to the resource
and DELETEs it to stop. Behind each resource is an ordinary Janus session with
a Streaming plugin handle, so WHEP viewers are served exactly as janus.js ones.
"""
