"""Where a worker is: the seed's `host:port`, or a URL."""

from __future__ import annotations


def base_url(address: str) -> str:
    """`host:port` (the seed's form) or a full URL; never `http://https://…` (a seed bug)."""
    address = address.strip().rstrip("/")
    if "://" in address:  # http, https, or tunnel (an outbound worker)
        return address
    return f"http://{address}"
