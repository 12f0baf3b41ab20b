"""Images: one piece, EXIF-rotated, its pixel count checked before any pixel is decoded."""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from datetime import datetime
from typing import cast

from PIL import Image, ImageOps, UnidentifiedImageError

from launcher.core.records import FileRecord, Locator, Piece
from launcher.ingest.extract.base import ExtractError, ExtractSettings, picture_context

HEIF_EXTENSIONS = (".heic", ".heif")
_heif_lock = threading.Lock()
_heif_ready: bool | None = None  # None: not tried yet

# Our cap (checked before decoding) is the one that counts; Pillow's warning for images between its
# own limit and twice that would only repeat it, on stderr, for images we reject anyway.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def extract_image(record: FileRecord, settings: ExtractSettings) -> Iterator[Piece]:
    """The image as one piece (RGB, or RGBA when it has transparency), its file name as text."""
    image = None
    if settings.decode_media:
        image = load_image(record.path, settings.max_image_pixels)
    else:
        check_header(record.path, settings.max_image_pixels)
    name = os.path.basename(record.path)
    yield Piece(
        text=name, image=image, locator=Locator(), context=picture_context(record, settings), modality="image"
    )


# EXIF tags: DateTimeOriginal and its time-zone offset (Exif IFD), DateTime (IFD0) as a fallback.
_EXIF_IFD = 0x8769
_DATE_TIME_ORIGINAL = 0x9003
_OFFSET_TIME_ORIGINAL = 0x9011
_DATE_TIME = 0x0132


def taken_ns(path: str) -> int | None:
    """When the picture was taken, from its EXIF (epoch ns), None when it does not say.

    EXIF dates are the camera's wall clock; without an OffsetTimeOriginal they are read as local
    time here. Only the header is read, no pixels. A missing or malformed date is None, never an
    error: the file's mtime stands in."""
    if path.lower().endswith(HEIF_EXTENSIONS) and not _enable_heif():
        return None
    try:
        with Image.open(path) as opened:
            exif = opened.getexif()
            sub = exif.get_ifd(_EXIF_IFD)
            stamp = sub.get(_DATE_TIME_ORIGINAL) or exif.get(_DATE_TIME)
            offset = sub.get(_OFFSET_TIME_ORIGINAL) if sub.get(_DATE_TIME_ORIGINAL) else None
    except Exception:
        return None
    return _exif_ns(stamp, offset)


def _exif_ns(stamp: object, offset: object) -> int | None:
    """'2024:03:05 14:30:00' (+ '+01:00') as epoch ns; None for blanks ('0000:00:00') and junk."""
    if not isinstance(stamp, str):
        return None
    text = stamp.strip().rstrip("\x00")
    try:
        moment = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
        if isinstance(offset, str) and offset.strip():
            moment = datetime.strptime(f"{text[:19]} {offset.strip()}", "%Y:%m:%d %H:%M:%S %z")
    except ValueError:
        return None
    return int(moment.timestamp()) * 1_000_000_000 if moment.year >= 1900 else None


def load_image(path: str, max_pixels: int) -> Image.Image:
    """A fully decoded, upright image, or ExtractError for an unreadable, truncated or oversized one."""
    with _opened(path, max_pixels) as opened:
        opened.load()
        return _plain_mode(_upright(opened))


def check_header(path: str, max_pixels: int) -> None:
    """ExtractError unless the file's header is a known image format within the pixel cap; nothing
    is decoded (the read pass: the embed pass decodes the picture, once)."""
    with _opened(path, max_pixels):
        pass


@contextlib.contextmanager
def _opened(path: str, max_pixels: int) -> Iterator[Image.Image]:
    """The image opened within the decompression-bomb cap (its header read, nothing decoded yet);
    what Pillow raises in the block, decoding included, becomes a one-line ExtractError."""
    if path.lower().endswith(HEIF_EXTENSIONS) and not _enable_heif():
        raise ExtractError("heic support not installed; pip install pillow-heif")
    _allow_pixels(max_pixels)
    try:
        with Image.open(path) as opened:
            # The header gives the size; nothing has been decoded yet.
            check_pixels(*opened.size, max_pixels)
            yield opened
    except Image.DecompressionBombError as exc:
        raise ExtractError(_too_large_message(None, None, max_pixels)) from exc
    except UnidentifiedImageError as exc:
        raise ExtractError("not a readable image (unknown format or corrupt header)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        # Pillow reports truncated and corrupt data as OSError ("image file is truncated ...").
        reason = str(exc).strip().splitlines()[0].lower() if str(exc).strip() else type(exc).__name__
        raise ExtractError(f"corrupt image ({reason})") from exc


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; a copy, so it outlives the open file."""
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:
        # A malformed EXIF block must not cost the picture: use it as stored.
        upright = None
    return upright if upright is not None else image.copy()


def check_pixels(width: int, height: int, max_pixels: int, what: str = "image") -> None:
    """ExtractError when width x height is over the decompression-bomb cap."""
    if width * height > max_pixels:
        raise ExtractError(_too_large_message(width, height, max_pixels, what))


def _too_large_message(width: int | None, height: int | None, max_pixels: int, what: str = "image") -> str:
    size = f" ({width}x{height}, {width * height / 1e6:.0f} mp)" if width and height else ""
    return f"{what} too large{size}, over the {max_pixels / 1e6:g} mp limit; raise it with --max-image-mp"


def _allow_pixels(max_pixels: int) -> None:
    """Let Pillow's own bomb check (which fires at twice MAX_IMAGE_PIXELS) admit what our cap admits."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _plain_mode(image: Image.Image) -> Image.Image:
    """RGB, or RGBA when the image has transparency: the two modes the engine accepts."""
    mode = image.mode
    if mode in ("RGB", "RGBA"):
        return image
    if mode in ("I", "F") or mode.startswith("I;16"):
        # High bit-depth grey: stretch the used range to 8 bits instead of clipping at 255.
        image = image.convert("F") if mode != "F" else image
        low, high = cast(tuple[float, float], image.getextrema())
        scale = 255.0 / (high - low) if high > low else 1.0
        image = image.point(lambda v: (v - low) * scale).convert("L")
    has_alpha = mode in ("RGBa", "LA", "La", "PA") or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def _enable_heif() -> bool:
    """Register pillow-heif's opener once; False when it is not installed."""
    global _heif_ready
    with _heif_lock:
        if _heif_ready is None:
            try:
                from pillow_heif import register_heif_opener
            except ImportError:
                _heif_ready = False
            else:
                register_heif_opener()
                _heif_ready = True
        return _heif_ready
