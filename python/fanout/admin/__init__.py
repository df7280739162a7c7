"""The Admin API (Janus's admin/monitor requests), stored tokens and the run-time log level."""

from fanout.admin.api import AdminApi
from fanout.admin.tokens import TokenStore

__all__ = ["AdminApi", "TokenStore"]
