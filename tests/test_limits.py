"""Resource limits and input validation: refused up front, in one line, with the way to raise a limit.

Covers the seed-range bound (before any list is built), the image pixel limit (from the header, before decoding),
``--depth-samples`` / ``--mesh-resolution`` bounds, NaN/inf in float options and number lists, ``--fps 0``, strict
``summary.json`` and type-checked ``-O`` training overrides.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from triplanenet.cli.common import check_sizes, parse_floats, parse_int_ranges
from triplanenet.cli.main import app
from triplanenet.errors import ConfigError, TriplaneNetError
from triplanenet.io.atomic import write_json_atomic
from triplanenet.io.images import ImageTooLargeError, read_image_array
from triplanenet.io.video import write_mp4
from triplanenet.limits import IMAGE_PIXELS, MESH_RESOLUTION, SEEDS
from triplanenet.train.config import load_train_config

runner = CliRunner()


def _one_line_cli_error(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert text.startswith("error:"), text
    return text


# ---------------------------------------------------------------------------------------------------------------
# Seeds


def test_a_huge_seed_range_is_refused_before_the_list_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.perf_counter()
    with pytest.raises(TriplaneNetError, match=r"more than 100000 seeds in one run.*TRIPLANENET_MAX_SEEDS"):
        parse_int_ranges("0-9999999999")
    assert time.perf_counter() - started < 0.5
    with pytest.raises(TriplaneNetError, match="more than"):
        parse_int_ranges("0-60000,70000-130000")  # the parts add up
    assert parse_int_ranges("0-3,7") == [0, 1, 2, 3, 7]
    monkeypatch.setenv(SEEDS.env, "3")
    assert parse_int_ranges("5-7") == [5, 6, 7]
    with pytest.raises(TriplaneNetError, match="more than 3 seeds"):
        parse_int_ranges("0-3")


@pytest.mark.parametrize("text", ["9" * 5000, f"0-{2**63}", "-1", "3-1", "x"])
def test_unusable_seeds_are_one_line_errors(text: str) -> None:
    with pytest.raises(TriplaneNetError, match="cannot parse seeds") as excinfo:
        parse_int_ranges(text)
    assert "\n" not in str(excinfo.value) and len(str(excinfo.value)) < 200


def test_generate_refuses_the_range_at_once() -> None:
    assert "more than 100000 seeds" in _one_line_cli_error("generate", "--seeds", "0-9999999999")


def test_a_bad_limit_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SEEDS.env, "lots")
    with pytest.raises(ConfigError, match="TRIPLANENET_MAX_SEEDS='lots' is not a positive integer"):
        SEEDS.value()
    monkeypatch.setenv(SEEDS.env, "200_000")
    assert SEEDS.value() == 200_000


# ---------------------------------------------------------------------------------------------------------------
# Image pixels, from the header


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (1-bit gray) followed by a tiny, far too short image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(("width", "height"), [(15_000, 15_000), (60_000, 60_000)])
def test_images_over_the_pixel_limit_are_refused_from_the_header(tmp_path: Path, width: int, height: int) -> None:
    path = _png_header_only(tmp_path / "huge.png", width, height)  # 225 MP (the probe's case) and 3.6 GP
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match=r"over the limit of 120 megapixels.*TRIPLANENET_MAX_IMAGE_PIXELS"):
        read_image_array(path)
    assert time.perf_counter() - started < 1.0  # nothing was decoded


def test_the_pixel_limit_can_be_lowered_and_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((100, 120, 3), dtype=np.uint8)).save(path)
    assert read_image_array(path).shape == (100, 120, 3)
    monkeypatch.setenv(IMAGE_PIXELS.env, "10000")
    with pytest.raises(ImageTooLargeError, match=r"over the limit of 0\.01 megapixels"):
        read_image_array(path)
    monkeypatch.setenv(IMAGE_PIXELS.env, "12000")
    assert read_image_array(path).shape == (100, 120, 3)


# ---------------------------------------------------------------------------------------------------------------
# Sizes of a computation


def test_depth_samples_and_mesh_resolution_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    check_sizes(depth_samples=96, mesh_resolution=512)
    with pytest.raises(ConfigError, match=r"--depth-samples 1000000 is over the limit of 512.*MAX_DEPTH_SAMPLES"):
        check_sizes(depth_samples=1_000_000)
    with pytest.raises(ConfigError, match=r"--mesh-resolution 100000 is over the limit of 512.*MESH_RESOLUTION"):
        check_sizes(mesh_resolution=100_000)
    with pytest.raises(TriplaneNetError, match="at least 8"):
        check_sizes(mesh_resolution=4)
    monkeypatch.setenv(MESH_RESOLUTION.env, "1024")
    check_sizes(mesh_resolution=1024)


def test_commands_refuse_oversized_options_before_loading_anything(tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    assert "--mesh-resolution 100000" in _one_line_cli_error("generate", "--mesh-resolution", "100000", "--out", out)
    message = _one_line_cli_error("invert", str(tmp_path), "--depth-samples", "1000000", "--out", out)
    assert "--depth-samples 1000000 is over the limit" in message
    assert "--fps must be >= 1" in " ".join(_one_line_cli_error("generate", "--fps", "0", "--out", out).split())
    with pytest.raises(ConfigError, match="frame rate must be a positive number"):
        write_mp4(tmp_path / "v.mp4", [np.zeros((8, 8, 3), np.uint8)], fps=0)
    assert not (tmp_path / "v.mp4").exists()


# ---------------------------------------------------------------------------------------------------------------
# NaN and inf


@pytest.mark.parametrize("text", ["nan", "0,inf", "-Infinity", "1e999"])
def test_number_lists_refuse_nan_and_inf(text: str) -> None:
    with pytest.raises(TriplaneNetError, match="holds nan or inf"):
        parse_floats(text, "views")


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--trunc", "nan"],
        ["generate", "--pitch", "inf"],
        ["generate", "--views", "0,nan"],
        ["invert", "x.png", "--views", "-inf"],
        ["preprocess", "x.png", "--min-face-px", "nan"],
    ],
    ids=["trunc", "pitch", "views", "invert-views", "min-face-px"],
)
def test_commands_refuse_non_finite_numbers(tmp_path: Path, args: list[str]) -> None:
    message = _one_line_cli_error(*args, "--out", str(tmp_path / "o"))
    assert "nan" in message or "inf" in message
    assert not (tmp_path / "o" / "summary.json").exists()


def test_summaries_are_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"loss": float("nan"), "views": (0.5, float("inf")), "nested": [{"x": -float("inf")}]})

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON")

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "loss": None,
        "views": [0.5, None],
        "nested": [{"x": None}],
    }


# ---------------------------------------------------------------------------------------------------------------
# Training overrides


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lr_psp=abc", "lr_psp must be a finite number, got 'abc'"),
        ("lr_psp=NaN", "lr_psp must be a finite number, got nan"),
        ("amp=yes", "amp must be true or false"),
        ("max_steps=1.5", "max_steps must be an integer"),
        ("psp_losses.pixel=l3", 'psp_losses.pixel must be one of "l2", "smooth_l1", "l1"'),
        ("triplanenet_version=true", "triplanenet_version must be one of 1, 2"),
        ("depth_samples=abc", "depth_samples must be an integer or null"),
        ("depth_samples=100000", "depth_samples 100000 is over the limit"),
    ],
)
def test_training_overrides_are_type_checked(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"training option|over the limit") as excinfo:
        load_train_config("tiny", [override])
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_well_typed_overrides_still_work() -> None:
    config = load_train_config("tiny", ["out=2024", "max_steps=1e3", "lr_psp=1", "generator=null", "amp=false"])
    assert (config.out, config.max_steps, config.lr_psp) == ("2024", 1000, 1.0)
    assert config.generator is None and config.amp is False
    assert isinstance(config.lr_psp, float) and isinstance(config.max_steps, int)


def test_train_cli_reports_a_bad_override_in_one_line() -> None:
    assert "lr_psp must be a finite number" in _one_line_cli_error("train", "tiny", "-O", "lr_psp=abc")
