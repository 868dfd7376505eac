"""Image decoding (``triplanenet.io.images``): EXIF orientation, file objects, error classes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from triplanenet.io.images import (
    CorruptImageError,
    NotAnImageError,
    load_image,
    read_image_array,
    read_photo,
)


def _pattern() -> np.ndarray:
    """A 24x40 image whose rotations all differ (a gradient plus a corner mark)."""
    rows, cols = np.mgrid[0:24, 0:40]
    array = np.stack([rows * 10, cols * 6, (rows + cols) * 3], axis=-1).astype(np.uint8)
    array[:4, :4] = 255
    return array


@pytest.mark.parametrize(("orientation", "stored"), [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_exif_rotated_files_come_out_upright(tmp_path: Path, orientation: int, stored: Image.Transpose) -> None:
    upright = Image.fromarray(_pattern())
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.png"  # PNG keeps pixels exact; PIL writes the EXIF chunk for PNG too
    upright.transpose(stored).save(path, exif=exif)
    assert np.array_equal(read_photo(path), _pattern())
    expected = torch.from_numpy(_pattern().astype(np.float32)).permute(2, 0, 1) / 127.5 - 1.0
    assert torch.equal(load_image(path), expected)


def test_file_objects_and_paths_decode_alike(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(_pattern()).save(path)
    from_path = read_image_array(path)
    from_bytes = read_image_array(io.BytesIO(path.read_bytes()))
    assert from_path.dtype == np.float32 and from_path.shape == (24, 40, 3)
    assert np.array_equal(from_path, from_bytes)


def test_error_classes(tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(NotAnImageError, match="not a readable image"):
        load_image(tmp_path / "text.png")
    good = tmp_path / "good.jpg"
    Image.fromarray(_pattern()).save(good, quality=90)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:200])
    with pytest.raises(CorruptImageError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.jpg")
