"""Images and audio as users send them: base64 on the wire, checked before anything trusts
them. Shared by the broker (which normalises images before queueing) and the worker node."""

from __future__ import annotations

import base64
import binascii


class BadMedia(Exception):
    """Bytes that are not what they claim (not an image, truncated, oversized…)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def decode_base64(data: str, *, what: str) -> bytes:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadMedia(f"bad_{what}", f"the {what} is not valid base64") from None
    if not raw:
        raise BadMedia(f"bad_{what}", f"the {what} is empty")
    return raw
