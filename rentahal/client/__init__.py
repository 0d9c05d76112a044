"""The Python SDK of RENT A HAL: talk to a broker from code, over its WebSocket bus.

```
from rentahal.client import AsyncClient

async with AsyncClient("http://127.0.0.1:5000", api_key) as client:
    print(await client.chat("What is the capital of France?"))
    handle = await client.submit("Tell me a story")
    async for piece in handle.stream():
        print(piece, end="")
```

`AsyncClient` is the client; `SyncClient` wraps it for code that is not async. Queries
become `QueryHandle`s whose `result()` is a `QueryResult`; failures are `RentahalError`s.
`retry` and `CircuitBreaker` are usable on their own. See docs/sdk.md.
"""

from rentahal.client.circuit import CircuitBreaker, CircuitState
from rentahal.client.client import AsyncClient, settings_from_env
from rentahal.client.connection import endpoints
from rentahal.client.errors import (
    Banned,
    CircuitOpen,
    Conflict,
    ConnectionLost,
    Forbidden,
    InvalidRequest,
    NotFound,
    QueryCancelled,
    QueryExpired,
    QueryFailed,
    RateLimited,
    Refused,
    RentahalError,
    RequestTimeout,
    ServerError,
    Unauthorized,
    error_from_event,
)
from rentahal.client.handle import QueryHandle
from rentahal.client.results import Event, QueryResult, SpokenSentence
from rentahal.client.retry import Backoff, RetryPolicy, retry
from rentahal.client.subscriptions import EventStream
from rentahal.client.sync import SyncClient, SyncQueryHandle
from rentahal.core.vocabulary import QueryType

__all__ = [
    "AsyncClient",
    "Backoff",
    "Banned",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "Conflict",
    "ConnectionLost",
    "Event",
    "EventStream",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "QueryCancelled",
    "QueryExpired",
    "QueryFailed",
    "QueryHandle",
    "QueryResult",
    "QueryType",
    "RateLimited",
    "Refused",
    "RentahalError",
    "RequestTimeout",
    "RetryPolicy",
    "ServerError",
    "SpokenSentence",
    "SyncClient",
    "SyncQueryHandle",
    "Unauthorized",
    "endpoints",
    "error_from_event",
    "retry",
    "settings_from_env",
]
