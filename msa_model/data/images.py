"""Decoding one image file to 8-bit RGB, fully, with a clear error for everything else.

Remote-sensing images are often not 8-bit RGB. Single-band 16-bit, 32-bit integer and float
images (16-bit PNG/TIFF, float32 TIFF) are rescaled to 8 bits by their own range (the min and
max of the image's finite pixels; non-finite pixels become 0): Pillow's ``convert("RGB")`` would
clip them to white or black. Multi-band images stored with 16 bits per sample are rejected:
Pillow decodes only their high byte, which leaves a 12-bit image 16 grey levels, and nothing
here can recover the rest. Images are decoded completely (a truncated file fails here, not in a
training epoch), and images above Pillow's pixel limit (decompression bombs) are refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from msa_model.data.karpathy import DatasetError

__all__ = ["ImageReadError", "read_rgb", "to_rgb8"]

_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


class ImageReadError(DatasetError):
    """An image file cannot be decoded to 8-bit RGB; ``reason`` says why without the path."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def _rawmode(image: Image.Image) -> str:
    if not image.tile:
        return image.mode
    args = image.tile[0].args
    return args if isinstance(args, str) else str(args[0]) if args else image.mode


def _stretch(pixels: np.ndarray, path: Path, mode: str) -> np.ndarray:
    values = pixels.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        raise ImageReadError(path, f"no finite pixel (mode {mode})")
    lo, hi = values[finite].min(), values[finite].max()
    scaled = np.zeros_like(values) if hi == lo else (values - lo) * (255.0 / (hi - lo))
    scaled[~finite] = 0.0
    return np.rint(scaled).astype(np.uint8)


def to_rgb8(image: Image.Image, path: Path, rawmode: str | None = None) -> Image.Image:
    """A decoded image as 8-bit RGB (see the module docstring for high bit depths).

    Args:
        image: A loaded Pillow image.
        path: Its file, for error messages.
        rawmode: The file's sample layout (the tile's raw mode, read before loading).

    Raises:
        ImageReadError: Multi-band 16-bit samples, or no finite pixel.
    """
    rawmode = rawmode or image.mode
    if image.mode in _HIGH_DEPTH:
        gray = _stretch(np.asarray(image), path, image.mode)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2))
    if ";16" in rawmode:
        raise ImageReadError(
            path,
            f"{len(image.getbands())} bands of 16 bits per sample (raw mode {rawmode}): "
            "Pillow keeps only the high byte of each; convert it to 8-bit RGB first (for "
            "example stretched per band by its range)",
        )
    return image if image.mode == "RGB" else image.convert("RGB")


def read_rgb(path: Path) -> Image.Image:
    """Decode the whole image file ``path`` to an 8-bit RGB image.

    Raises:
        ImageReadError: Missing file, not an image, truncated or corrupt data, more pixels than
            ``PIL.Image.MAX_IMAGE_PIXELS``, or a sample format :func:`to_rgb8` rejects.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                rawmode = _rawmode(image)
                image.load()
                return to_rgb8(image, path, rawmode)
    except ImageReadError:
        raise
    except FileNotFoundError as exc:
        raise ImageReadError(path, "image not found") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(path, f"refused as a possible decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "not a readable image") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for corrupt data
        raise ImageReadError(path, f"cannot decode ({type(exc).__name__}: {exc})") from exc
