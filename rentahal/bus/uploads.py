"""Images sent in pieces over the bus (`vision_chunk`, the seed's protocol), put together.

Uploads are keyed by (user, image_id), so one user's chunks can never land in another's
image, and a user who reconnects mid-upload carries on. Chunks may come in any order; a
chunk sent again with the same data is acknowledged again, with other data it is refused.
Bounded: a few open uploads per user, a size cap, and uploads left unfinished expire.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rentahal.bus.messages import VisionChunk
from rentahal.core.errors import ErrorCode, ProtocolError
from rentahal.core.specs import QuerySpec

UPLOAD_TTL = 120.0  # seconds an unfinished upload is kept
MAX_OPEN_PER_USER = 4
MAX_UPLOAD_CHARS = 16 * 1024 * 1024  # the most base64 an assembled image may have


@dataclass(slots=True)
class _Upload:
    first: VisionChunk  # its prompt and target fields describe the query
    chunks: dict[int, str] = field(default_factory=dict)
    size: int = 0
    touched: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Progress:
    received: int
    total: int
    query: QuerySpec | None = None  # set when the last chunk arrived


class ChunkedUploads:
    def __init__(self, ttl: float = UPLOAD_TTL) -> None:
        self._ttl = ttl
        self._open: dict[tuple[str, str], _Upload] = {}

    def add(self, user_id: str, chunk: VisionChunk) -> Progress:
        """Take one chunk; the finished query once every chunk is in."""
        self._expire()
        key = (user_id, chunk.image_id)
        upload = self._open.get(key)
        if upload is None:
            if sum(1 for owner, _ in self._open if owner == user_id) >= MAX_OPEN_PER_USER:
                raise ProtocolError(
                    ErrorCode.USER_LIMIT, f"at most {MAX_OPEN_PER_USER} uploads at a time"
                )
            upload = self._open[key] = _Upload(first=chunk)
        if chunk.total_chunks != upload.first.total_chunks:
            raise ProtocolError(
                ErrorCode.INVALID,
                f"image {chunk.image_id} has {upload.first.total_chunks} chunks, "
                f"not {chunk.total_chunks}",
            )
        if chunk.chunk_id >= chunk.total_chunks:
            raise ProtocolError(
                ErrorCode.INVALID, f"chunk {chunk.chunk_id} of {chunk.total_chunks} is out of range"
            )
        upload.touched = time.monotonic()
        previous = upload.chunks.get(chunk.chunk_id)
        if previous is not None and previous != chunk.chunk_data:
            raise ProtocolError(
                ErrorCode.CONFLICT, f"chunk {chunk.chunk_id} was sent before with other data"
            )
        if previous is None:
            upload.size += len(chunk.chunk_data)
            if upload.size > MAX_UPLOAD_CHARS:
                del self._open[key]
                raise ProtocolError(
                    ErrorCode.TOO_LARGE, f"the image is over {MAX_UPLOAD_CHARS} base64 characters"
                )
            upload.chunks[chunk.chunk_id] = chunk.chunk_data
        total = chunk.total_chunks
        if len(upload.chunks) < total:
            return Progress(len(upload.chunks), total)
        del self._open[key]
        first = upload.first
        image = "".join(upload.chunks[i] for i in range(total))
        query = QuerySpec(
            prompt=first.prompt,
            query_type=first.query_type,
            model_type=first.model_type,
            model_name=first.model_name,
            image=image,
        )
        return Progress(total, total, query)

    def _expire(self) -> None:
        cutoff = time.monotonic() - self._ttl
        for key in [k for k, upload in self._open.items() if upload.touched < cutoff]:
            del self._open[key]
