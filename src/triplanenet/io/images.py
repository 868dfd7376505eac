"""Image, depth-map and array outputs (PNG + ``.npy``), written atomically."""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image

from triplanenet.io.atomic import atomic_path, write_bytes_atomic


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


def load_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read any PIL-readable image as a (3, H, W) float32 tensor in [-1, 1].

    Grayscale, palette, RGBA (composited on black), CMYK and 16-bit images are converted to 8-bit-range RGB.

    Raises:
        InputImageError: the file is missing, not an image, or corrupt.
    """
    from PIL import UnidentifiedImageError

    from triplanenet.errors import InputImageError

    try:
        with Image.open(path) as handle:
            handle.load()
            image = handle
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array16 = np.asarray(image, dtype=np.float64)
                scale = 65535.0 if array16.max() > 255 else 255.0
                rgb = np.repeat((array16 / scale * 255.0)[..., None], 3, axis=2)
                array = rgb.astype(np.float32)
            elif image.mode == "F":
                raise InputImageError(f"{path}: floating-point images are not supported; save it as 8-bit RGB")
            else:
                if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                    rgba = image.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                    image = Image.alpha_composite(background, rgba)
                array = np.asarray(image.convert("RGB"), dtype=np.float32)
    except FileNotFoundError:
        raise InputImageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputImageError(f"{path}: is a folder, not an image") from None
    except UnidentifiedImageError:
        raise InputImageError(f"{path}: not a readable image (PNG, JPEG, ...)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputImageError(f"{path}: corrupt or truncated image ({exc})") from None
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return tensor / 127.5 - 1.0


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a (3, H, W) tensor to (3, size, size): area-style antialiased bilinear when shrinking."""
    if image.shape[-2:] == (size, size):
        return image
    shrinking = image.shape[-1] > size
    resized = torch.nn.functional.interpolate(
        image[None], size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking
    )
    return resized[0]
