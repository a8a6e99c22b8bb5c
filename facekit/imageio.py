"""The one image reader of facekit: files or bytes to RGB ``uint8``, within a pixel budget.

Every image facekit reads from outside (``facekit compress`` inputs, LFW, training folders,
training packs, the recognisers' own reads, classical codecs' bitstreams) goes through
:func:`open_image`: the header is parsed first and an image that *declares* more pixels
than the budget is refused before a single pixel is decoded (a decompression bomb), and
every decoder failure becomes a :class:`~facekit.errors.FacekitError` naming the problem.

Example::

    from facekit.imageio import open_image
    rgb = open_image("face.jpg")                  # (H, W, 3) uint8
    rgb = open_image(data, formats=["JPEG"])      # bytes, one format only
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FacekitError, ImageError
from .pngstream import check_png_stream

#: default pixel budget of :func:`open_image`: the same as the classical codecs' decoders
MAX_PIXELS = 8192 * 8192

#: formats :func:`open_image` accepts by default (what ``facekit compress`` reads)
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "PPM", "WEBP", "TIFF", "GIF")


# --------------------------------------------------------------------------- images


def open_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    max_pixels: int = MAX_PIXELS,
    formats: Sequence[str] | None = IMAGE_FORMATS,
    error: type[FacekitError] = ImageError,
    name: str | None = None,
    on_convert: Callable[[str], None] | None = None,
) -> np.ndarray:
    """An image file (or its bytes) as RGB ``uint8`` ``(H, W, 3)``, read defensively.

    The header is parsed first and an image that *declares* more than ``max_pixels``
    pixels is refused before any pixel is decoded. Any failure of the decoder (Pillow
    raises ``OSError``, ``SyntaxError``, ``EOFError``, ``struct.error``, ... on damaged
    files) becomes ``error`` with a message naming the file and the problem.

    Args:
        source: a path, or the file's bytes.
        max_pixels: the pixel budget (width x height as declared by the header).
        formats: Pillow format names accepted (None: any format Pillow reads).
        error: the :class:`~facekit.errors.FacekitError` subclass raised.
        name: what messages call the image (default: the path, or ``<N bytes>``).
        on_convert: called with a short note (``"alpha channel dropped"``, ``"grayscale
            converted to RGB"``, ...) when making the image RGB changed more than its layout.
    """
    if name is None:
        name = str(source) if isinstance(source, (str, os.PathLike)) else f"<{len(source)} bytes>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise error(f"{name}: empty input, not an image")
        stream: Any = io.BytesIO(bytes(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise error(f"{path}: no such file")
        if path.stat().st_size == 0:
            raise error(f"{path}: empty file, not an image")
        stream = path
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(stream, formats=list(formats) if formats else None) as im:
                w, h = im.size
                if w < 1 or h < 1:
                    raise error(f"{name}: declares an empty {w}x{h} image")
                if w * h > max_pixels:
                    raise error(
                        f"{name}: declared size {w}x{h} ({w * h:,} pixels) exceeds the limit of "
                        f"{max_pixels:,} pixels; refusing to decode it (decompression bomb?)"
                    )
                if im.format == "PNG":  # Pillow zero-fills the rows of a stream that ends early
                    raw = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else path.read_bytes()
                    check_png_stream(raw, error, name)
                im.load()
                note = conversion_note(im.mode, "transparency" in im.info)
                rgb = np.asarray(im.convert("RGB"))
    except FacekitError:
        raise
    except UnidentifiedImageError as e:
        allowed = f" (accepted formats: {', '.join(formats)})" if formats else ""
        raise error(f"{name}: not an image file facekit can read{allowed}") from e
    except Image.DecompressionBombError as e:
        raise error(f"{name}: refused as a decompression bomb: {e}") from e
    except MemoryError as e:
        raise error(f"{name}: not enough memory to decode this image") from e
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise many types on damaged files
        raise error(f"{name}: damaged or truncated image ({type(e).__name__}: {e})") from e
    if note and on_convert is not None:
        on_convert(note)
    return np.ascontiguousarray(rgb)


def conversion_note(mode: str, transparent: bool = False) -> str | None:
    """What making an image of Pillow ``mode`` RGB loses or changes, or None (RGB, palette)."""
    notes = []
    if mode.startswith(("1", "L", "I", "F")):
        notes.append("grayscale converted to RGB")
    elif mode == "CMYK":
        notes.append("CMYK converted to RGB")
    if "A" in mode or mode.endswith("a") or transparent:
        notes.append("alpha channel dropped")
    return ", ".join(notes) or None
