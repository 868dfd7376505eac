"""Editing (TriPlaneNet supplement eq. 6), GANSpace directions, direction files and the edit/directions commands."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from triplanenet.cli.main import app
from triplanenet.demo import DEMO_SEED, load_default_model
from triplanenet.editing import (
    Direction,
    compute_ganspace,
    edit_planes,
    edited_inversion,
    edited_ws,
    fit_w,
    load_direction_file,
    load_directions,
    make_edit_base,
    resolve_direction,
    sample_w,
    save_directions,
)
from triplanenet.errors import CheckpointError, ConfigError
from triplanenet.inversion import Inversion
from triplanenet.inverters.encoder import TriPlaneNetInverter
from triplanenet.synth.params import HeadParams
from triplanenet.synth.render import render_heads
from triplanenet.views import default_label


@pytest.fixture(scope="module")
def model():
    return load_default_model("cpu")


@pytest.fixture(scope="module")
def inversion(model) -> Inversion:
    generator = model.decoder
    camera = default_label(generator, yaw=0.2)
    head = render_heads(HeadParams.sample(torch.Generator().manual_seed(DEMO_SEED + 7), 1), camera, resolution=128)
    return TriPlaneNetInverter(model).invert(head.image[0], camera)


@pytest.fixture(scope="module")
def space(model):
    return compute_ganspace(model.decoder, samples=2000, components=6, seed=3)


# ------------------------------------------------------------------------------------------------------------------
# A generator whose tri-planes are linear in the mean W+ code: eq. 6 then has a closed form.


class LinearGenerator:
    def __init__(self, num_ws: int = 4, w_dim: int = 8, channels: int = 2, res: int = 3) -> None:
        torch.manual_seed(0)
        self.matrix = torch.randn(w_dim, 3 * channels * res * res)
        self.shape = (3, channels, res, res)
        self.w_avg = torch.zeros(w_dim)
        self.config = SimpleNamespace(num_ws=num_ws, w_dim=w_dim)

    def planes(self, ws: torch.Tensor, noise_mode: str = "const", offsets: torch.Tensor | None = None) -> torch.Tensor:
        features = ws.mean(dim=1) @ self.matrix
        if offsets is not None:
            features = features + offsets.reshape(features.shape)
        return features.view(ws.shape[0], *self.shape)


def _linear_inversion(offsets: bool = True) -> tuple[LinearGenerator, Inversion]:
    generator = LinearGenerator()
    torch.manual_seed(1)
    ws = torch.randn(1, 4, 8)
    delta = torch.randn(1, 6, 3, 3) if offsets else None
    return generator, Inversion(generator, ws, torch.zeros(1, 25), delta, "test")  # type: ignore[arg-type]


def test_eq6_closed_form_on_known_linear_planes() -> None:
    generator, inv = _linear_inversion()
    direction = Direction("d", torch.randn(8), scale=0.5)
    base = make_edit_base(inv, steps=0)  # the mean code is the exact W fit of a mean-linear generator
    assert base.fit_loss == pytest.approx(0.0, abs=1e-10)
    edited = edit_planes(base, direction, 3.0)
    expected = inv.planes() + (1.5 * direction.vector @ generator.matrix).view(1, *generator.shape)
    torch.testing.assert_close(edited, expected, atol=1e-5, rtol=1e-5)
    keep = make_edit_base(inv, offsets="keep", steps=0)
    torch.testing.assert_close(edit_planes(keep, direction, 3.0), expected, atol=1e-5, rtol=1e-5)


def test_strength_zero_returns_the_inversion_planes_exactly(inversion: Inversion, space) -> None:
    base = make_edit_base(inversion, steps=5)
    for name in ("pc0", "pc3"):
        assert torch.equal(edit_planes(base, space.directions()[name], 0.0), inversion.planes())
    edited = edited_inversion(base, space.directions()["pc0"], 0.0)
    assert torch.equal(edited.planes(), inversion.planes())
    assert torch.equal(edited.render().image, inversion.render().image)


def test_without_offsets_and_with_a_w_code_the_edit_is_g_of_w_edit(model, space) -> None:
    generator = model.decoder
    w = sample_w(generator, 1, seed=11)
    inv = Inversion(generator, w[:, None].expand(1, generator.num_ws, -1).clone(), default_label(generator), None)
    fitted, loss = fit_w(inv)
    assert torch.equal(fitted, w) and loss == 0.0
    direction = space.directions()["pc1"]
    for offsets in ("absorb", "keep"):
        planes = edit_planes(make_edit_base(inv, offsets=offsets), direction, 2.0)
        target = generator.planes(edited_ws(w, direction, 2.0, generator.num_ws))
        torch.testing.assert_close(planes, target, atol=1e-4, rtol=1e-4)


def test_edit_is_affine_in_the_offsets_and_linear_in_strength(inversion: Inversion, space) -> None:
    generator = inversion.generator
    direction = space.directions()["pc2"]
    w = inversion.ws.mean(dim=1)
    a, b = edited_ws(w, direction, 0.7, generator.num_ws), edited_ws(w, direction, -1.9, generator.num_ws)
    both = edited_ws(w, direction, 0.7 - 1.9, generator.num_ws)
    torch.testing.assert_close(both - w[:, None], (a - w[:, None]) + (b - w[:, None]), atol=1e-5, rtol=0)
    shift = torch.randn_like(inversion.offsets)
    moved = Inversion(generator, inversion.ws, inversion.camera, inversion.offsets + shift)
    first = edit_planes(make_edit_base(inversion, w=w, offsets="keep"), direction, 1.5)
    second = edit_planes(make_edit_base(moved, w=w, offsets="keep"), direction, 1.5)
    torch.testing.assert_close(second - first, shift.view_as(first), atol=1e-4, rtol=0)


@settings(max_examples=8, deadline=None)
@given(strength=st.floats(-3, 3, allow_nan=False), start=st.integers(0, 9), width=st.integers(1, 10))
def test_edit_difference_is_g_w_edit_minus_g_w(strength: float, start: int, width: int) -> None:
    generator, inv = _linear_inversion()
    direction = Direction("d", torch.arange(8, dtype=torch.float32) - 3.5)
    layers = (min(start, 3), min(start, 3) + 1 + width % (4 - min(start, 3)))
    base = make_edit_base(inv, steps=0)
    planes = edit_planes(base, direction, strength, layers)
    ws_edit = edited_ws(base.w, direction, strength, 4, layers)
    torch.testing.assert_close(planes - base.base, generator.planes(ws_edit) - base.g_w, atol=1e-4, rtol=1e-4)
    moved = ws_edit - base.w[:, None]
    assert torch.all(moved[:, : layers[0]] == 0) and torch.all(moved[:, layers[1] :] == 0)


def test_fit_w_lowers_the_objective(inversion: Inversion) -> None:
    _, start = fit_w(inversion, steps=0)
    w, loss = fit_w(inversion, steps=25, lr=0.02)
    assert w.shape == (1, inversion.ws.shape[-1])
    assert loss < 0.8 * start


def test_edited_inversion_survives_save_and_load(inversion: Inversion, space, tmp_path: Path) -> None:
    base = make_edit_base(inversion, steps=5)
    edited = edited_inversion(base, space.directions()["pc0"], 2.0)
    assert not torch.allclose(edited.planes(), inversion.planes())
    edited.save(tmp_path / "edit.safetensors")
    loaded = Inversion.load(tmp_path / "edit.safetensors", inversion.generator)
    torch.testing.assert_close(loaded.planes(), edited.planes(), atol=1e-4, rtol=1e-4)
    assert loaded.method.endswith("+edit")


# ------------------------------------------------------------------------------------------------------------------
# GANSpace and direction files


def test_ganspace_components_are_orthonormal_and_ordered(model, space) -> None:
    components = space.components.double()
    torch.testing.assert_close(components @ components.T, torch.eye(6, dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.all(space.stdev[:-1] >= space.stdev[1:]) and torch.all(space.stdev > 0)
    assert torch.all(space.variance_ratio[:-1] >= space.variance_ratio[1:]) and space.variance_ratio.sum() <= 1.0
    samples = sample_w(model.decoder, 2000, seed=3).double() - space.mean.double()
    projected = (samples @ components.T).std(dim=0)
    torch.testing.assert_close(projected.float(), space.stdev, rtol=1e-3, atol=1e-4)
    random = torch.nn.functional.normalize(torch.randn(20, components.shape[1], dtype=torch.float64), dim=1)
    assert (samples @ random.T).std(dim=0).max() <= projected[0] + 1e-6
    again = compute_ganspace(model.decoder, samples=2000, components=6, seed=3)
    assert torch.equal(again.components, space.components)


def test_direction_bundle_round_trip(space, tmp_path: Path) -> None:
    path = tmp_path / "dirs.safetensors"
    space.save(path, layers=(0, 4))
    loaded = load_directions(path, w_dim=space.components.shape[1], num_ws=10)
    assert list(loaded) == [f"pc{k}" for k in range(6)]
    assert loaded["pc1"].layers == (0, 4) and loaded["pc1"].scale == pytest.approx(float(space.stdev[1]))
    torch.testing.assert_close(loaded["pc1"].vector, space.components[1])
    with pytest.raises(CheckpointError, match="shape"):
        load_directions(path, w_dim=7)
    save_directions(tmp_path / "mine.safetensors", {"smile": Direction("smile", torch.ones(10, 128), None, 2.0)})
    assert load_directions(tmp_path / "mine.safetensors", 128, 10)["smile"].vector.shape == (10, 128)
    other = tmp_path / "other.safetensors"
    other.write_bytes(path.read_bytes().replace(b"triplanenet-directions", b"x" * 22))
    with pytest.raises(CheckpointError, match="not a direction bundle"):
        load_directions(other)
    with pytest.raises(ConfigError, match=r"unknown direction 'smile'.*pc0, pc1"):
        resolve_direction("smile", 128, 10, loaded)


@pytest.mark.parametrize("shape", [(128,), (1, 128), (10, 128), (1, 10, 128)])
def test_direction_files_in_interfacegan_shapes_load(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "age.npy"
    np.save(path, np.ones(shape, dtype=np.float64))
    direction = load_direction_file(path, w_dim=128, num_ws=10)
    assert direction.name == "age" and direction.vector.dtype == torch.float32
    assert direction.delta(10, 2.0).shape == (10, 128) and float(direction.delta(10, 2.0)[3, 5]) == 2.0
    masked = direction.delta(10, 1.0, layers=(2, 5))
    assert masked[:2].abs().sum() == 0 and masked[5:].abs().sum() == 0 and masked[2:5].min() == 1.0


def test_bad_direction_files_raise_clear_errors(tmp_path: Path) -> None:
    cases = {
        "shape.npy": (np.ones((3, 128)), "shape"),
        "short.npy": (np.ones(64), "shape"),
        "nan.npy": (np.full(128, np.nan), "NaN"),
        "zero.npy": (np.zeros(128), "all zeros"),
        "text.npy": (np.array(["a"] * 128), "dtype"),
    }
    for name, (array, message) in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(CheckpointError, match=message):
            load_direction_file(tmp_path / name, w_dim=128, num_ws=10)
    np.save(tmp_path / "pickled.npy", np.array([{"w": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError, match="pickled"):
        load_direction_file(tmp_path / "pickled.npy", 128, 10)
    np.savez(tmp_path / "archive.npy", a=np.ones(128))
    with pytest.raises(CheckpointError, match=r"npz"):
        load_direction_file(tmp_path / "archive.npy.npz", 128, 10)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(CheckpointError, match="readable"):
        load_direction_file(tmp_path / "junk.npy", 128, 10)
    with pytest.raises(CheckpointError, match="not found"):
        load_direction_file(tmp_path / "missing.npy", 128, 10)
    with pytest.raises(ConfigError, match="layer range"):
        Direction("d", torch.ones(128)).delta(10, 1.0, layers=(4, 12))
    with pytest.raises(ConfigError, match="layers"):
        Direction("d", torch.ones(7, 128)).delta(10, 1.0)
    with pytest.raises(ConfigError, match="components"):
        compute_ganspace(load_default_model().decoder, samples=100, components=0)


# ------------------------------------------------------------------------------------------------------------------
# Commands

runner = CliRunner()


def test_directions_and_edit_commands_end_to_end(inversion: Inversion, tmp_path: Path) -> None:
    dirs = tmp_path / "dirs.safetensors"
    result = runner.invoke(
        app,
        ["directions", "--out", str(dirs), "--samples", "300", "--components", "4", "--npy", str(tmp_path / "npy"),
         "--device", "cpu"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(load_directions(dirs)) == ["pc0", "pc1", "pc2", "pc3"]
    assert (tmp_path / "npy" / "pc2.npy").is_file()
    inversion.save(tmp_path / "inversion.safetensors")
    out = tmp_path / "edits"
    result = runner.invoke(
        app,
        ["edit", str(tmp_path / "inversion.safetensors"), "--direction", "pc0", "--directions", str(dirs),
         "--strengths=-2,0,2", "--views=-0.3,0.3", "--video", "--frames", "4", "--fit-steps", "10",
         "--layers", "0-5", "--out", str(out), "--device", "cpu"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "edit.json").read_text())
    assert summary["direction"] == "pc0" and summary["layers"] == [0, 6] and len(summary["edits"]) == 3
    for stem in ("pc0_-2.00", "pc0_+0.00", "pc0_+2.00"):
        assert np.asarray(Image.open(out / f"{stem}.png")).shape == (128, 128, 3)
        assert np.asarray(Image.open(out / f"{stem}_views.png")).shape == (128, 256, 3)
        assert (out / f"{stem}_orbit.mp4").stat().st_size > 500
    assert np.asarray(Image.open(out / "sweep.png")).shape == (128, 384, 3)
    zero = np.asarray(Image.open(out / "pc0_+0.00.png")).astype(int)
    plus = np.asarray(Image.open(out / "pc0_+2.00.png")).astype(int)
    recon = inversion.render().image[0]
    from triplanenet.io.images import tensor_to_uint8

    assert np.abs(zero - tensor_to_uint8(recon).astype(int)).max() == 0
    assert np.abs(plus - zero).mean() > 1.0
    assert not list(out.glob(".*")), "temporary files were left behind"

    npy_out = tmp_path / "npy_edit"
    result = runner.invoke(
        app,
        ["edit", str(tmp_path / "inversion.safetensors"), "--direction", str(tmp_path / "npy" / "pc1.npy"),
         "--strength", "1.5", "--views", "0", "--fit-steps", "0", "--out", str(npy_out), "--device", "cpu"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (npy_out / "pc1_+1.50.png").is_file()


def test_edit_command_reports_user_mistakes_in_one_line(inversion: Inversion, tmp_path: Path) -> None:
    inversion.save(tmp_path / "inversion.safetensors")
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    cases = [
        (["--direction", "smile", "--strength", "1"], "unknown direction 'smile'"),
        (["--direction", str(tmp_path / "bad.npy"), "--strength", "1"], "not a readable .npy"),
        (["--direction", "pc0"], "exactly one of --strength"),
        (["--direction", "pc0", "--strength", "1", "--layers", "3-40"], "layer range"),
    ]
    for extra, message in cases:
        result = runner.invoke(
            app, ["edit", str(tmp_path / "inversion.safetensors"), *extra, "--fit-steps", "0", "--out", str(tmp_path)]
        )
        assert result.exit_code == 1, result.output
        assert message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
