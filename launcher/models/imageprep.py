"""Image preprocessing exactly as the official embedder does it, before llama.cpp sees a pixel.

llama.cpp's own loader rounds differently at .5, pads to keep the aspect ratio where the reference
stretches, and drops alpha instead of compositing on white (cosine 0.84 to 0.99 against the
reference), so we resize here and hand mtmd a bitmap that needs no further resizing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from launcher.core.errors import InputError

PATCH_SIZE = 16
FACTOR = PATCH_SIZE * 2  # one visual token per 32 x 32 pixels after the 2 x 2 merge
MIN_PIXELS = 4 * FACTOR * FACTOR
MAX_PIXELS = 1800 * FACTOR * FACTOR
MAX_RATIO = 200


def visual_tokens(pixels: int) -> int:
    """The visual tokens a picture of at most `pixels` pixels becomes (one per FACTOR x FACTOR)."""
    return max(1, pixels // (FACTOR * FACTOR))


RGBArray = npt.NDArray[np.uint8]
"""An (height, width, 3) uint8 RGB image."""


@dataclass(frozen=True)
class PreparedImage:
    """Pixels ready for the vision encoder."""

    pixels: RGBArray
    width: int
    height: int

    @property
    def n_tokens(self) -> int:
        """Visual tokens the language model will see."""
        return (self.width // FACTOR) * (self.height // FACTOR)


def smart_resize(
    height: int, width: int, factor: int = FACTOR, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """Target (height, width): multiples of factor, pixel count within bounds, aspect kept."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise InputError(
            f"image aspect ratio {max(height, width) / min(height, width):.0f}:1 is over the "
            f"model's limit of {MAX_RATIO}:1"
        )
    # Python's round() rounds half to even, as the reference does.
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        # The reference has no max() here and fails on such images; we keep at least one token.
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with an RGBA image composited onto white (the reference does only RGBA)."""
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.split()[3])
        return background
    return image.convert("RGB")


def load_image(source: Image.Image | str | Path) -> Image.Image:
    """Open an image file fully (so decode errors surface here), or pass a PIL image through."""
    if isinstance(source, Image.Image):
        return source
    path = Path(source)
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except FileNotFoundError:
        raise InputError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot decode image {path}: {exc}") from None


def prepare_image(
    source: Image.Image | str | Path, *, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> PreparedImage:
    """Load, convert and resize one image the way the official embedder does."""
    image = to_rgb(load_image(source))
    width, height = image.size
    if width < 1 or height < 1:
        raise InputError("image has no pixels")
    new_h, new_w = smart_resize(height, width, FACTOR, min_pixels, max_pixels)
    resized = image.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
    pixels = np.ascontiguousarray(np.asarray(resized, dtype=np.uint8))
    return PreparedImage(pixels=pixels, width=new_w, height=new_h)
