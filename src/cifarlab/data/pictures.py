"""A picture file as the 8-bit RGB picture it shows, whatever its mode (folders, predict.py).

Both readers of picture files go through here, so a training folder and ``predict.py`` see a file
the same way. Pillow opens it; ``to_rgb`` then turns each mode into RGB:

- 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ...) by Pillow's
  own ``convert("RGB")`` (CMYK as ``(255 - c) * (255 - k) / 255``, LAB through littleCMS to sRGB);
- pictures with transparency (an alpha band, a palette or colour marked transparent) are laid onto
  white, which is what a viewer shows for them on a white page;
- 16-bit, 32-bit integer and float grayscale by ``gray_to_8bit``. Pillow's ``convert`` clips these
  to 0..255, which turns a 16-bit photo white; they are scaled instead (see there).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# the suffixes that folder walks (training folders, predict.py on a folder) take as pictures: the
# raster formats Pillow reads without any extra library
PICTURE_SUFFIXES = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
BACKGROUND = (255, 255, 255)  # what transparent pixels become
# what a broken or foreign file raises somewhere between Image.open and the last pixel read
READ_ERRORS = (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)


class PictureError(Exception):
    """A file that is not a picture this project reads; the message says why, for one line."""


def is_picture_name(name: str) -> bool:
    return Path(name).suffix.lower() in PICTURE_SUFFIXES


def why_unreadable(err: BaseException) -> str:
    """A short reason for a per-file error line."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image PIL can read"
    return str(err) or type(err).__name__


@contextmanager
def open_picture(path: Path) -> Iterator[Image.Image]:
    """The picture at ``path``, opened lazily (only its header is read so far).

    A picture of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (Pillow's decompression-bomb
    limit, 89.5 million by default) is refused here, before any pixel is decoded: Pillow itself
    only warns up to twice that size.
    """
    with Image.open(path) as image:
        limit = Image.MAX_IMAGE_PIXELS
        width, height = image.size
        if limit is not None and width * height > limit:
            raise PictureError(
                f"{width}x{height} is {width * height} pixels, over Pillow's decompression-bomb "
                f"limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS); shrink the picture to read it"
            )
        yield image


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (in place: no copy when there is none)."""
    ImageOps.exif_transpose(image, in_place=True)
    return image


def gray_to_8bit(pixels: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit integer or float gray values -> uint8, scaled by a range, never clipped.

    The range is the one a user means by the file:

    - unsigned 16-bit (``I;16``, ``I;16B``, ...): 0..65535, i.e. ``round(v / 257)``, so a 16-bit
      photo looks like the photo and a 16-bit copy of an 8-bit picture gives back its values;
    - 32-bit integer (``I``) and float (``F``): the smallest of 0..1 (floats only), 0..255 and
      0..65535 that holds every value (8- or 16-bit data stored wide, or a float picture in
      0..1), else the picture's own minimum..maximum (negative values, depth maps and the like).
      NaN becomes the bottom of the range and +-inf its ends.
    """
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2:
        low, high = 0.0, 65535.0
    else:
        finite = pixels[np.isfinite(pixels)] if pixels.dtype.kind == "f" else pixels
        low = float(finite.min()) if finite.size else 0.0
        high = float(finite.max()) if finite.size else 0.0
        nominal = [(0.0, 255.0), (0.0, 65535.0)]
        if pixels.dtype.kind == "f":
            nominal.insert(0, (0.0, 1.0))
        low, high = next(((lo, hi) for lo, hi in nominal if low >= lo and high <= hi), (low, high))
    # float32 in place: exact for 16-bit values, and 4 bytes a pixel on a picture of 89 million
    values = np.nan_to_num(pixels.astype(np.float32), copy=False, nan=low, posinf=high, neginf=low)
    values -= low
    values *= 255.0 / (high - low) if high > low else 0.0
    np.rint(values, out=values)
    return np.clip(values, 0, 255, out=values).astype(np.uint8)


def _is_wide_gray(mode: str) -> bool:
    return mode in ("I", "F") or mode.startswith("I;")


def _wide_gray_to_l(image: Image.Image) -> Image.Image:
    """A wide gray image as ``L`` (``LA`` when a gray value is marked transparent)."""
    pixels = np.asarray(image)
    gray = Image.fromarray(gray_to_8bit(pixels), "L")
    transparent = image.info.get("transparency")
    if isinstance(transparent, (int, float)) and not isinstance(transparent, bool):
        alpha = np.where(pixels == transparent, 0, 255).astype(np.uint8)
        return Image.merge("LA", (gray, Image.fromarray(alpha, "L")))
    return gray


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode Pillow opens -> 8-bit RGB as the picture shows (module docstring)."""
    if _is_wide_gray(image.mode):
        image = _wide_gray_to_l(image)
    if image.has_transparency_data:
        background = Image.new("RGBA", image.size, (*BACKGROUND, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image if image.mode == "RGB" else image.convert("RGB")


def as_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image as a ``(3, H, W)`` uint8 tensor."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def _centre_square(image: Image.Image) -> Image.Image:
    """The largest centred square: what survives the final crop, so nothing else is resized."""
    width, height = image.size
    side = min(width, height)
    if width == height:
        return image
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def square_rgb(image: Image.Image, size: int) -> Image.Image:
    """Any opened picture -> ``size`` x ``size`` RGB: upright, the shorter side resized and the
    centre cropped (the centre square is cut first, so the same pixels result), any mode.

    The work is bounded whatever the picture's shape: a JPEG is decoded at the smallest DCT scale
    (1/2, 1/4 or 1/8) that keeps twice ``size`` pixels a side; only the centre square is
    converted and resized, and the resize first shrinks by whole factors (``reducing_gap``) as
    ``Image.thumbnail`` does. A 1,000,000x2 strip costs a 2x2 square, not a 16,000,000x32 one.
    A picture already ``size`` x ``size`` keeps its pixels.
    """
    if image.format == "JPEG":
        image.draft(None, (2 * size, 2 * size))
    rgb = to_rgb(_centre_square(upright(image)))
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return rgb


def load_picture(path: Path, size: int) -> torch.Tensor:
    """The picture at ``path`` as ``(3, size, size)`` uint8 RGB, as training folders and
    predict.py read every picture (``square_rgb``); a file that is not one raises
    ``PictureError`` or one of ``READ_ERRORS``."""
    with open_picture(path) as image:
        return as_tensor(square_rgb(image, size))


def try_load_picture(path: Path, size: int) -> torch.Tensor | str:
    """``load_picture``, or why the file cannot be read as a picture."""
    try:
        return load_picture(path, size)
    except (PictureError, *READ_ERRORS) as err:
        return why_unreadable(err)
