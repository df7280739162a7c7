"""fanout: a scalable one-to-many WebRTC streaming server that speaks the Janus API."""
