"""The Streaming plugin (``janus.plugin.streaming``)."""

from fanout.plugins.streaming.plugin import StreamingPlugin

__all__ = ["StreamingPlugin"]
