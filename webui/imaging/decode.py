"""Images coming from users (API base64, uploads): decoded with limits and clear errors."""
from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# Largest input side accepted: a 8192² RGB image is 200 MB as floats, already more than an
# img2img or upscale of it needs; bigger inputs are refused before their pixels are decoded.
MAX_INPUT_SIDE = 8192

_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,")


class ImageInputError(ValueError):
    """The user gave something that is not a usable image; the message says what and why."""


def check_size(img: Image.Image, what: str = "image") -> Image.Image:
    w, h = img.size
    if max(w, h) > MAX_INPUT_SIDE:
        raise ImageInputError(f"{what} is {w}x{h}; the largest side accepted is {MAX_INPUT_SIDE} px")
    if w < 1 or h < 1:
        raise ImageInputError(f"{what} is empty ({w}x{h})")
    return img


def open_image_bytes(raw: bytes, what: str = "image") -> Image.Image:
    """Bytes → loaded PIL image; the header's size is checked before the pixels are decoded."""
    if not raw:
        raise ImageInputError(f"{what} is empty")
    try:
        with warnings.catch_warnings():
            # our own side limit below decides; PIL's pixel-count warning is only noise here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
            check_size(img, what)
            img.load()
        return img
    except ImageInputError:
        raise
    except Image.DecompressionBombError:
        raise ImageInputError(f"{what} is too large; the largest side accepted is {MAX_INPUT_SIDE} px") from None
    except UnidentifiedImageError:
        raise ImageInputError(f"{what} is not an image PIL can read (PNG, JPEG, WebP, ...)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageInputError(f"{what} could not be decoded ({e}); is the file complete?") from None


def decode_base64_image(data: object, what: str = "image") -> Image.Image:
    """base64 text with or without a `data:image/...;base64,` prefix → image."""
    if not isinstance(data, str) or not data.strip():
        raise ImageInputError(f"{what} is empty")
    try:
        raw = base64.b64decode(_DATA_URL.sub("", data.strip()), validate=False)
    except (binascii.Error, ValueError):
        raise ImageInputError(f"{what} is not valid base64") from None
    return open_image_bytes(raw, what)


def open_image_file(path: Path) -> Image.Image:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ImageInputError(f"{path.name}: cannot read ({e.strerror or e})") from None
    return open_image_bytes(raw, path.name)
