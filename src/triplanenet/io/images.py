"""Image, depth-map and array outputs (PNG + ``.npy``), written atomically."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from triplanenet.errors import InputImageError
from triplanenet.io.atomic import atomic_path, write_bytes_atomic
from triplanenet.limits import IMAGE_PIXELS


def tensor_to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, H, W) tensor in [-1, 1] -> (H, W, 3) / (H, W) uint8 array."""
    if image.ndim != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {tuple(image.shape)}")
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array_np = array.permute(1, 2, 0).numpy()
    return array_np[..., 0] if array_np.shape[-1] == 1 else array_np


def save_png(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save an (H, W) or (H, W, 3) uint8 array as PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def save_image(path: str | os.PathLike[str], image: torch.Tensor) -> None:
    """Save a (3, H, W) tensor in [-1, 1] as PNG."""
    save_png(path, tensor_to_uint8(image))


def save_npy(path: str | os.PathLike[str], array: np.ndarray | torch.Tensor) -> None:
    """Save an array as ``.npy``, atomically."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def depth_to_uint8(depth: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
    """Visualise a (1, H, W) depth map: near = bright, far = dark, min–max normalised over ``mask`` (or all).

    This is EG3D's ``-depth`` display convention; values outside the mask are drawn black.
    """
    d = depth.detach().float().cpu()[0]
    valid = torch.ones_like(d, dtype=torch.bool) if mask is None else mask.detach().cpu()[0] > 0.5
    if not bool(valid.any()):
        return np.zeros(d.shape, dtype=np.uint8)
    near, far = d[valid].min(), d[valid].max()
    scaled = (far - d) / (far - near).clamp_min(1e-8)
    scaled = torch.where(valid, scaled.clamp(0, 1), torch.zeros_like(scaled))
    return (scaled * 255).round().to(torch.uint8).numpy()


def save_depth(path_png: str | os.PathLike[str], depth: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """Save a depth visualisation PNG and the raw float32 depth as ``.npy`` beside it (same stem)."""
    save_png(path_png, depth_to_uint8(depth, mask))
    save_npy(os.fspath(path_png)[: -len(".png")] + ".npy", depth.detach().float().cpu()[0].numpy())


def image_grid(images: list[np.ndarray]) -> np.ndarray:
    """Concatenate (H, W, 3) uint8 images horizontally, resizing each to the first one's height."""
    height = images[0].shape[0]
    resized = []
    for image in images:
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.shape[0] != height:
            width = round(image.shape[1] * height / image.shape[0])
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))
        resized.append(image)
    return np.concatenate(resized, axis=1)


def labelled_sheet(
    rows: list[list[np.ndarray]], headers: list[str], group_break: int | None = None, pad: int = 4
) -> np.ndarray:
    """A white sheet of (H, W, 3) uint8 tiles, one list per row, under a header line of column titles.

    Every tile is shown at the largest tile's size (smaller ones are enlarged, nearest neighbour). ``group_break``
    (a column index) inserts a wider gap before that column, to separate groups such as "input view" and "novel
    view". Returns (H', W', 3) uint8.
    """
    from PIL import ImageDraw, ImageFont

    if not rows or any(len(row) != len(headers) for row in rows):
        raise ValueError("labelled_sheet needs rows with one tile per header")
    height = max(tile.shape[0] for row in rows for tile in row)
    width = max(tile.shape[1] for row in rows for tile in row)
    gaps = [pad + (3 * pad if group_break is not None and c == group_break else 0) for c in range(len(headers))]
    lefts = [sum(gaps[: c + 1]) + c * width for c in range(len(headers))]
    font = ImageFont.load_default()
    header = 14
    sheet = Image.new("RGB", (lefts[-1] + width + pad, header + pad + len(rows) * (height + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for left, title in zip(lefts, headers, strict=True):
        text_width = draw.textlength(title, font=font)
        draw.text((left + max(0.0, (width - text_width) / 2), 2), title, fill="black", font=font)
    for r, row in enumerate(rows):
        top = header + pad + r * (height + pad)
        for left, tile in zip(lefts, row, strict=True):
            if tile.ndim == 2:
                tile = np.repeat(tile[..., None], 3, axis=2)
            picture = Image.fromarray(tile)
            if picture.size != (width, height):
                picture = picture.resize((width, height), Image.Resampling.NEAREST)
            sheet.paste(picture, (left, top))
    return np.asarray(sheet)


MAX_PIXELS = IMAGE_PIXELS.default
"""Images with more pixels are refused from their header, before decoding (a 225-MP PNG of 218 KB would take
5.7 GB). ``TRIPLANENET_MAX_IMAGE_PIXELS`` overrides it (see :mod:`triplanenet.limits`)."""


def max_image_pixels() -> int:
    """The pixel limit in force: ``TRIPLANENET_MAX_IMAGE_PIXELS`` when set, else :data:`MAX_PIXELS`."""
    return IMAGE_PIXELS.value() if os.environ.get(IMAGE_PIXELS.env, "").strip() else MAX_PIXELS


class NotAnImageError(InputImageError):
    """The file is not an image format PIL can read."""


class CorruptImageError(InputImageError):
    """The file looks like an image but cannot be decoded (truncated, damaged)."""


class ImageTooLargeError(InputImageError):
    """The image has more than :data:`MAX_PIXELS` pixels."""


def read_image_array(path: str | os.PathLike[str] | BinaryIO) -> np.ndarray:
    """Decode any PIL-readable image (a path or a binary file object) to (H, W, 3) float32 RGB in [0, 255], upright
    by its EXIF orientation tag.

    Grayscale, palette, RGBA (composited on black), CMYK and 16-bit images are converted to 8-bit-range RGB.

    Raises:
        InputImageError: missing file or a folder; :class:`NotAnImageError` for a non-image,
            :class:`CorruptImageError` for a truncated/damaged file, :class:`ImageTooLargeError` for a huge one.
    """
    from PIL import ImageOps, UnidentifiedImageError

    file: Path | BinaryIO = path if hasattr(path, "read") else Path(path)  # type: ignore[arg-type]
    if isinstance(file, Path) and not file.exists():
        raise InputImageError(f"{file}: file not found")
    if isinstance(file, Path) and file.is_dir():
        raise InputImageError(f"{file}: is a folder, not an image")
    limit = max_image_pixels()
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit  # PIL refuses images over twice this when opening (and only warns below)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            handle = Image.open(file)  # reads the header only
        with handle:
            width, height = handle.size
            if width * height > limit:
                raise Image.DecompressionBombError(f"{width}x{height}")
            handle.load()
            image = ImageOps.exif_transpose(handle)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array16 = np.asarray(image, dtype=np.float64)
                scale = 65535.0 if array16.max() > 255 else 255.0
                return np.repeat((array16 / scale * 255.0)[..., None], 3, axis=2).astype(np.float32)
            if image.mode == "F":
                raise InputImageError(f"{file}: floating-point images are not supported; save it as 8-bit RGB")
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
            return np.asarray(image.convert("RGB"), dtype=np.float32)
    except Image.DecompressionBombError:
        raise ImageTooLargeError(
            f"{file}: too large (over the limit of {limit / 1e6:g} megapixels); downscale it first, or set "
            f"{IMAGE_PIXELS.env} to raise the limit"
        ) from None
    except UnidentifiedImageError:
        raise NotAnImageError(f"{file}: not a readable image (PNG, JPEG, ...)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"{file}: corrupt or truncated image ({exc})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def read_photo(path: str | os.PathLike[str] | BinaryIO) -> np.ndarray:
    """:func:`read_image_array` as (H, W, 3) uint8 RGB (what face detection and alignment take)."""
    return np.ascontiguousarray(np.clip(np.round(read_image_array(path)), 0, 255).astype(np.uint8))


def load_image(path: str | os.PathLike[str] | BinaryIO) -> torch.Tensor:
    """:func:`read_image_array` as a (3, H, W) float32 tensor in [-1, 1]."""
    array = read_image_array(path)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a (3, H, W) tensor to (3, size, size): area-style antialiased bilinear when shrinking."""
    if image.shape[-2:] == (size, size):
        return image
    shrinking = image.shape[-1] > size
    resized = torch.nn.functional.interpolate(
        image[None], size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking
    )
    return resized[0]
