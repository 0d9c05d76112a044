"""What every server-sent event stream here shares: REST's query events and `/v1`'s chat
chunks both send a comment when the query has been quiet for a while, so that proxies and
clients that time out idle connections keep the stream open."""

from __future__ import annotations

KEEP_ALIVE = 15.0  # seconds between SSE comments on a quiet stream
KEEP_ALIVE_COMMENT = ": keep-alive\n\n"  # an SSE comment: clients ignore it
