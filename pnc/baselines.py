"""Image codecs PNC is compared with (Wang et al., RTSS 2023, Sec. VI): JPEG, progressive
JPEG (whose prefix decodes to a coarser image) and WebP, all through Pillow.

A progressive JPEG is cut at scan boundaries: a prefix that ends after the ``s``-th scan,
closed with an end-of-image marker, decodes to the image refined by ``s`` scans. A budget
that ends inside a scan uses the scans before it (a decoder cannot use half a scan's
Huffman data reliably). JPEG and WebP are all or nothing.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

SOS = b"\xff\xda"        # start of scan
EOI = b"\xff\xd9"        # end of image


def _image(pixels: np.ndarray) -> Image.Image:
    """uint8 ``(H, W)`` grey or ``(H, W, 3)`` RGB array -> PIL image."""
    return Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB")


def encode_jpeg(pixels: np.ndarray, quality: int, progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    _image(pixels).save(buffer, format="JPEG", quality=quality, optimize=True, progressive=progressive)
    return buffer.getvalue()


def encode_webp(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    _image(pixels).save(buffer, format="WEBP", quality=quality, method=6)
    return buffer.getvalue()


CODECS = {
    "jpeg": lambda pixels, q: encode_jpeg(pixels, q),
    "progressive_jpeg": lambda pixels, q: encode_jpeg(pixels, q, progressive=True),
    "webp": encode_webp,
}


def decode(data: bytes, grey: bool = False) -> np.ndarray:
    """Decoded uint8 pixels of a complete JPEG or WebP file (WebP has no grey mode: a grey
    image comes back as RGB unless ``grey``)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L" if grey else "RGB"))


def scan_prefixes(jpeg: bytes) -> list[int]:
    """Byte lengths of the usable prefixes of a (progressive) JPEG: one ending before each
    scan after the first, and the whole file."""
    starts, at = [], jpeg.find(SOS)
    while at != -1:
        starts.append(at)
        at = jpeg.find(SOS, at + 2)
    return [*starts[1:], len(jpeg)]


def decode_prefix(jpeg: bytes, length: int, grey: bool = False) -> np.ndarray:
    """The image from the first ``length`` bytes of a progressive JPEG, ``length`` being one
    of :func:`scan_prefixes` (an end-of-image marker closes a cut stream)."""
    data = jpeg[:length]
    return decode(data if length == len(jpeg) else data + EOI, grey)
