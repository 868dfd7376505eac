"""Tensors read from files are validated (issue 21): inversions (``ws``, ``camera``, ``offsets``) and weights.

An inversion whose ``ws`` is an integer tensor, empty, a batch of 4, NaN or of another generator's shape, or whose
camera is not a finite (1, 25) tensor, is a one-line ``CheckpointError`` naming the file and the field, from
``Inversion.load`` and from ``triplanenet edit``. Weights of an integer dtype or holding NaN are refused by
``check_state_dict`` (used by every loader); float16/bfloat16 weights load as float32.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from triplanenet.cli.main import app
from triplanenet.demo import load_default_model
from triplanenet.errors import CheckpointError
from triplanenet.inversion import Inversion
from triplanenet.io.checkpoints import load_generator, save_generator
from triplanenet.views import default_label

runner = CliRunner()


@pytest.fixture(scope="module")
def model():
    return load_default_model("cpu")


@pytest.fixture(scope="module")
def generator(model):
    return model.decoder


def _rewrite(source: Path, target: Path, **changes: torch.Tensor) -> Path:
    """Copy a safetensors file with some tensors replaced (metadata kept)."""
    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    tensors.update(changes)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(target), metadata=metadata)
    return target


@pytest.fixture
def inversion_file(model, generator, tmp_path: Path) -> Path:
    ws = model.latent_avg.reshape(-1, generator.config.w_dim)[-1].expand(1, generator.num_ws, -1).clone()
    camera = default_label(generator).reshape(1, 25)
    Inversion(generator, ws, camera, None, "test").save(tmp_path / "good.safetensors")
    return tmp_path / "good.safetensors"


def _bad_inversions(generator) -> list[tuple[str, str, torch.Tensor]]:
    n, w = generator.num_ws, generator.config.w_dim
    return [
        ("int-ws", "ws", torch.zeros(1, n, w, dtype=torch.int64)),
        ("empty-ws", "ws", torch.zeros(0, n, w)),
        ("batch-4-ws", "ws", torch.zeros(4, n, w)),
        ("nan-ws", "ws", torch.full((1, n, w), float("nan"))),
        ("wrong-width-ws", "ws", torch.zeros(1, n, w + 1)),
        ("flat-camera", "camera", torch.zeros(25)),
        ("short-camera", "camera", torch.zeros(1, 24)),
        ("inf-camera", "camera", torch.full((1, 25), float("inf"))),
        ("bool-camera", "camera", torch.zeros(1, 25, dtype=torch.bool)),
    ]


def test_good_inversion_loads(generator, inversion_file: Path) -> None:
    loaded = Inversion.load(inversion_file, generator)
    assert loaded.ws.dtype == torch.float32 and loaded.camera.shape == (1, 25)


def test_malformed_inversions_are_one_line_errors_naming_file_and_field(
    generator, inversion_file: Path, tmp_path: Path
) -> None:
    for name, field, tensor in _bad_inversions(generator):
        bad = _rewrite(inversion_file, tmp_path / f"{name}.safetensors", **{field: tensor})
        with pytest.raises(CheckpointError) as info:
            Inversion.load(bad, generator)
        text = str(info.value)
        assert "\n" not in text and str(bad) in text and f" {field} " in text, (name, text)


def test_float16_inversion_is_read_as_float32(generator, inversion_file: Path, tmp_path: Path) -> None:
    with safe_open(str(inversion_file), "pt") as handle:
        ws = handle.get_tensor("ws")
    half = _rewrite(inversion_file, tmp_path / "half.safetensors", ws=ws.half())
    assert Inversion.load(half, generator).ws.dtype == torch.float32


def test_edit_of_a_malformed_inversion_is_a_one_line_error(generator, inversion_file: Path, tmp_path: Path) -> None:
    n, w = generator.num_ws, generator.config.w_dim
    bad = _rewrite(inversion_file, tmp_path / "nan.safetensors", ws=torch.full((1, n, w), float("nan")))
    result = runner.invoke(
        app,
        ["edit", str(bad), "--direction", "pc0", "--strength", "1", "--fit-steps", "0", "--out", str(tmp_path / "o"),
         "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "Traceback" not in result.output and "ws holds NaN" in text and "nan.safetensors" in text, text
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.fixture
def generator_file(generator, tmp_path: Path) -> Path:
    return save_generator(generator, tmp_path / "g.safetensors")


def _first_weight(file: Path) -> tuple[str, torch.Tensor]:
    with safe_open(str(file), "pt") as handle:
        key = next(k for k in handle.keys() if k.endswith(".weight"))  # noqa: SIM118
        return key, handle.get_tensor(key)


def test_integer_and_nan_weights_are_refused_naming_file_and_key(generator_file: Path, tmp_path: Path) -> None:
    key, weight = _first_weight(generator_file)
    for name, bad_weight, message in [
        ("int", weight.to(torch.int32), "dtype torch.int32"),
        ("nan", torch.full_like(weight, float("nan")), "only NaN/inf"),
        ("one-inf", weight.clone().view(-1).index_fill(0, torch.tensor([0]), float("inf")).view_as(weight), "NaN"),
    ]:
        bad = _rewrite(generator_file, tmp_path / f"{name}.safetensors", **{key: bad_weight})
        with pytest.raises(CheckpointError) as info:
            load_generator(bad)
        text = str(info.value)
        assert "\n" not in text and str(bad) in text and key in text and message in text, text


def test_half_precision_weights_load_as_float32(generator_file: Path, tmp_path: Path) -> None:
    key, weight = _first_weight(generator_file)
    for dtype in (torch.float16, torch.bfloat16):
        half = _rewrite(generator_file, tmp_path / f"{dtype}.safetensors", **{key: weight.to(dtype)})
        loaded = load_generator(half).state_dict()[key]
        assert loaded.dtype == torch.float32
        assert torch.equal(loaded, weight.to(dtype).float())


def test_nan_latent_avg_is_refused_in_generator_and_model_files(model, generator, tmp_path: Path) -> None:
    from triplanenet.io.model_checkpoints import load_triplanenet, save_triplanenet

    good_generator = save_generator(generator, tmp_path / "g.safetensors", latent_avg=generator.w_avg.clone())
    nan = torch.full_like(generator.w_avg, float("nan"))
    bad_generator = _rewrite(good_generator, tmp_path / "g_nan.safetensors", latent_avg=nan)
    with pytest.raises(CheckpointError, match=r"g_nan.safetensors: latent_avg holds NaN"):
        load_generator(bad_generator)
    model_file = tmp_path / "m.safetensors"
    save_triplanenet(model, model_file)
    latent = model.latent_avg.clone()
    latent[3, 7] = float("inf")
    with pytest.raises(CheckpointError, match=r"m_inf.safetensors: latent_avg holds NaN or infinite"):
        load_triplanenet(_rewrite(model_file, tmp_path / "m_inf.safetensors", latent_avg=latent))
    with pytest.raises(CheckpointError, match=r"latent_avg is torch.int64"):
        load_triplanenet(_rewrite(model_file, tmp_path / "m_int.safetensors", latent_avg=latent.long()))


def test_direction_bundles_are_checked_without_a_generator_too(tmp_path: Path) -> None:
    import json

    from triplanenet.editing.directions import Direction, load_directions, save_directions

    good = tmp_path / "dirs.safetensors"
    save_directions(good, {"pc0": Direction("pc0", torch.randn(64), layers=(0, 4), scale=2.0)})
    assert load_directions(good)["pc0"].layers == (0, 4)
    nan = _rewrite(good, tmp_path / "nan.safetensors", **{"direction.pc0": torch.full((64,), float("nan"))})
    with pytest.raises(CheckpointError, match=r"nan.safetensors \[pc0\]: direction contains NaN"):
        load_directions(nan)
    with safe_open(str(good), "pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    for entry in ({"layers": ["a", 2]}, {"layers": [0, 4], "scale": float("nan")}, {"scale": -1}):
        metadata["directions"] = json.dumps({"pc0": entry})
        bad = tmp_path / "entry.safetensors"
        save_file(tensors, str(bad), metadata=metadata)
        with pytest.raises(CheckpointError, match=r"\[pc0\]: malformed entry"):
            load_directions(bad)


def test_a_directory_given_as_a_model_is_named_as_such(tmp_path: Path) -> None:
    from triplanenet.io.model_checkpoints import load_triplanenet

    with pytest.raises(CheckpointError, match="is a directory; pass the checkpoint file inside it"):
        load_triplanenet(tmp_path)
