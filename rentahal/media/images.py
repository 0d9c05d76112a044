"""Images from requests, decoded and checked by Pillow before any model sees them.

The broker normalises every vision image once, at submit, as the seed did: flattened onto
white, shrunk to fit 512×512, re-encoded as JPEG quality 85. Workers then get small, uniform
input whatever the user uploaded (a 12-megapixel phone photo, a PNG with alpha, a GIF).
"""

from __future__ import annotations

import base64
import io

from PIL import Image, UnidentifiedImageError

from rentahal.media import BadMedia, decode_base64

MAX_PIXELS = 24_000_000  # a 40-megapixel photo is refused, not decoded into 160 MB of RAM
VISION_BOX = (512, 512)
JPEG_QUALITY = 85


def decode_image(data: str) -> Image.Image:
    """An RGB image; `BadMedia` for non-images, truncated files and oversized images."""
    raw = decode_base64(data, what="image")
    try:
        image = Image.open(io.BytesIO(raw))
        if image.width * image.height > MAX_PIXELS:
            raise BadMedia(
                "image_too_large",
                f"the image is {image.width}×{image.height}; the limit is {MAX_PIXELS:,} pixels",
            )
        image.load()
    except Image.DecompressionBombError:
        raise BadMedia("image_too_large", f"the image is over {MAX_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise BadMedia("bad_image", f"not an image that can be decoded: {exc}") from None
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", image.size, "white")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def normalize_for_vision(data: str) -> str:
    """Base64 JPEG of the image fitted into 512×512; blocking, run it in a thread."""
    image = decode_image(data)
    image.thumbnail(VISION_BOX, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    return base64.b64encode(out.getvalue()).decode()


# Formats served as they came from a worker; any other (WebP, GIF, BMP…) becomes PNG.
PASSED_FORMATS = ("PNG", "JPEG")


def generated_image(data: str) -> str:
    """An image a worker made, as base64 once Pillow has read it: PNG and JPEG as they came,
    other formats re-encoded as PNG. `BadMedia` for garbage or an oversized image; blocking,
    run it in a thread."""
    raw = decode_base64(data, what="image")
    try:
        with Image.open(io.BytesIO(raw)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise BadMedia("image_too_large", f"the image is {image.width}×{image.height}")
            if image.format in PASSED_FORMATS:
                image.verify()
                return base64.b64encode(raw).decode()
            image.load()
            out = io.BytesIO()
            image.save(out, "PNG")
            return base64.b64encode(out.getvalue()).decode()
    except Image.DecompressionBombError:
        raise BadMedia("image_too_large", f"the image is over {MAX_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadMedia("bad_image", f"not an image that can be decoded: {exc}") from None
