"""The demo page fanout serves: lists the mountpoints and plays one with the real janus.js."""
