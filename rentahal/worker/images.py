"""Images from requests, decoded and checked by Pillow before any model sees them."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from rentahal.worker.audio import decode_base64
from rentahal.worker.engines.base import BadInput

MAX_PIXELS = 24_000_000  # a 40-megapixel photo is refused, not decoded into 160 MB of RAM


def decode_image(data: str) -> Image.Image:
    """An RGB image; `BadInput` for non-images, truncated files and oversized images."""
    raw = decode_base64(data, what="image")
    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > MAX_PIXELS:
            raise BadInput(
                "image_too_large",
                f"the image is {image.width}×{image.height}; the limit is {MAX_PIXELS:,} pixels",
            )
        image.load()
    except Image.DecompressionBombError:
        raise BadInput("image_too_large", f"the image is over {MAX_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInput("bad_image", f"not an image that can be decoded: {exc}") from None
    if image.mode in ("RGBA", "LA", "P"):
        flat = Image.new("RGB", image.size, "white")
        flat.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return flat
    return image.convert("RGB")
