"""TriPlaneNet v2 (the WACV'24 model): official end-to-end parity, loading official-format files by detection, the
mirror inputs, and the commands on a v2 checkpoint."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import assert_parity, fill_module, fixture_weights, load_fixture, read_keys_tsv
from triplanenet.cli.main import app
from triplanenet.editing.edit import reencode_offsets
from triplanenet.eg3d.camera import camera_label, mirror_label
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.errors import CheckpointError, ConfigError
from triplanenet.inverters import TriPlaneNetInverter
from triplanenet.io.model_checkpoints import load_triplanenet, official_config, save_triplanenet
from triplanenet.model import TriPlaneNet, TriPlaneNetConfig

PLANES_TOL = dict(atol=1e-4, rtol=1e-4)
IMAGE_TOL = dict(atol=1e-3, rtol=1e-3)


def _official_size_v2(generator_config: GeneratorConfig | None = None) -> TriPlaneNet:
    model = TriPlaneNet(TriPlaneNetConfig.official_v2(generator_config))
    fill_module(model.psp_encoder, seed=1, prefix="psp_encoder.")
    fill_module(model.triplanenet_encoder, seed=1, prefix="triplanenet_encoder.")
    fill_module(model.decoder, seed=1)
    return model.eval()


@pytest.mark.parametrize("upsampling", ["nearest", "pixelshuffle"])
def test_state_dict_matches_official_v2_keys(upsampling: str) -> None:
    with torch.device("meta"):
        model = TriPlaneNet(TriPlaneNetConfig.official_v2(upsampling=upsampling))  # type: ignore[arg-type]
    actual = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert len(actual) == 1182
    if upsampling == "nearest":
        assert actual == read_keys_tsv("triplanenet_v2_checkpoint.tsv")
    else:
        # Same keys; the PixelShuffle head reads 96 planes + 24 features (reference §13.2).
        assert actual.keys() == read_keys_tsv("triplanenet_v2_checkpoint.tsv").keys()
        assert actual["triplanenet_encoder.final_head_two.0.weight"] == (96, 120, 3, 3)


def test_end_to_end_matches_official_v2_fixture() -> None:
    fixture = load_fixture("triplanenet_v2_e2e_seed1.pt")
    assert fixture["meta"]["use_pixelshuffle"] is False and fixture["novel_view_c"] is None
    # The official inference script doubles the samples to 96 + 96.
    generator_config = GeneratorConfig.ffhq512().replace(
        rendering={"depth_resolution": 96, "depth_resolution_importance": 96}
    )
    model = _official_size_v2(generator_config)
    model.set_latent_avg(fixture["latent_avg"])
    # The defaults compute exactly the mirror inputs the fixture was given.
    assert torch.equal(fixture["x"].flip(-1), fixture["x_mirror"])
    assert torch.equal(mirror_label(fixture["c"]), fixture["c_mirror"])
    with torch.no_grad():
        out = model(fixture["x"], fixture["c"], "mirror", deterministic=True)
    assert_parity("codes", out.ws, fixture["codes"], **PLANES_TOL)
    assert_parity("y_hat_initial_resized", out.image_psp, fixture["y_hat_initial_resized"], **IMAGE_TOL)
    assert_parity(
        "y_hat_initial_novel_resized", out.image_psp_mirror, fixture["y_hat_initial_novel_resized"], **IMAGE_TOL
    )
    first = model.decoder.planes(out.ws).flatten(1, 2)
    assert_parity("first_planes_stride8", first[:, :, ::8, ::8], fixture["first_planes_stride8"], **PLANES_TOL)
    planes = out.planes.flatten(1, 2)
    assert_parity("final_planes_stride4", planes[:, :, ::4, ::4], fixture["final_planes_stride4"], **PLANES_TOL)
    assert_parity("final_planes_crop", planes[:, :, 120:136, 120:136], fixture["final_planes_crop"], **PLANES_TOL)
    residual = out.offsets.double()
    stats = torch.stack([residual.mean(), residual.std(), residual.abs().sum(), residual.min(), residual.max()])
    assert_parity("residual_stats", stats, fixture["residual_stats"].double(), **PLANES_TOL)
    channel = torch.stack([residual.mean((2, 3)), residual.std((2, 3)), residual.abs().mean((2, 3))], dim=-1)
    assert_parity("residual_channel_stats", channel, fixture["residual_channel_stats"].double(), **PLANES_TOL)
    assert_parity("y_hat_resized", out.image, fixture["y_hat_resized"], **IMAGE_TOL)
    assert_parity("depth", out.depth, fixture["depth"], **IMAGE_TOL)
    assert_parity("y_hat_novel_resized", out.image_target, fixture["y_hat_novel_resized"], **IMAGE_TOL)
    assert_parity("depth_novel", out.depth_target, fixture["depth_novel"], **IMAGE_TOL)


# ---------------------------------------------------------------------------------------------------------------------
# Detection of the version and the decoder variant


def _meta_state(config: TriPlaneNetConfig) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return TriPlaneNet(config).state_dict()


@pytest.mark.parametrize(
    ("config", "version", "upsampling"),
    [
        (TriPlaneNetConfig.official(), 1, "pixelshuffle"),
        (TriPlaneNetConfig.official_v2(upsampling="nearest"), 2, "nearest"),
        (TriPlaneNetConfig.official_v2(upsampling="pixelshuffle"), 2, "pixelshuffle"),
    ],
    ids=["v1", "v2-nearest", "v2-pixelshuffle"],
)
def test_official_config_is_detected_from_the_keys(config: TriPlaneNetConfig, version: int, upsampling: str) -> None:
    state = _meta_state(config)
    found = official_config(state, {"use_pixelshuffle": upsampling == "pixelshuffle"}, GeneratorConfig.ffhq512())
    assert found == config
    assert found.version == version and found.triplane.upsampling == upsampling
    assert official_config(state, None, GeneratorConfig.ffhq512()) == config


def test_official_config_refuses_what_it_cannot_place() -> None:
    gen = GeneratorConfig.ffhq512()
    v2 = _meta_state(TriPlaneNetConfig.official_v2())
    with pytest.raises(CheckpointError, match="use_pixelshuffle=True but its weights have the nearest decoder"):
        official_config(v2, {"use_pixelshuffle": True}, gen)
    with pytest.raises(CheckpointError, match="no tri-plane encoder head"):
        official_config({k: v for k, v in v2.items() if "final_head" not in k}, None, gen)
    both = {**v2, "triplanenet_encoder.final_head.0.weight": torch.empty(96, 24, 3, 3)}
    with pytest.raises(CheckpointError, match="both heads"):
        official_config(both, None, gen)
    odd = {**v2, "triplanenet_encoder.final_head_two.0.weight": torch.empty(96, 100, 3, 3)}
    with pytest.raises(CheckpointError, match="reads 100 channels"):
        official_config(odd, None, gen)


# ---------------------------------------------------------------------------------------------------------------------
# An official-format v2 checkpoint written from the key list, through the loader and the commands


@pytest.fixture(scope="module")
def official_v2_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, torch.Tensor]]:
    """``triplanenet_v2_final.pth`` and ``ffhq512-128.pth`` in the official layouts, every tensor made from the
    reference key list (not from our module) with the fixtures' deterministic weights."""
    folder = tmp_path_factory.mktemp("official_v2")
    weights = fixture_weights()
    keys = read_keys_tsv("triplanenet_v2_checkpoint.tsv")
    state: dict[str, torch.Tensor] = {}
    for key, shape in keys.items():
        # Generator tensors are seeded by their G_ema key, encoder tensors by their full key (fixtures/README.md).
        seed_key = key.removeprefix("decoder.")
        dtype = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        state[key] = weights.fill(seed_key, shape, dtype, seed=1)
    generator_config = GeneratorConfig.ffhq512()
    generator_file = folder / "ffhq512-128.pth"
    g_ema = {k.removeprefix("decoder."): v for k, v in state.items() if k.startswith("decoder.")}
    latent_avg = weights.fill("latent_avg", (512,), torch.float32, seed=1)
    torch.save(
        {"G_ema": g_ema, "init_kwargs": generator_config.to_official_kwargs(), "latent_avg": latent_avg},
        generator_file,
    )
    checkpoint = folder / "triplanenet_v2_final.pth"
    opts = {"use_pixelshuffle": False, "n_styles": 14, "batch_size": 3, "mirror_lambda": 0.1}
    torch.save({"state_dict": state, "opts": opts, "step": 1_500_000, "best_val_loss": None}, checkpoint)
    return checkpoint, generator_file, state


def test_official_v2_file_loads_strictly_and_converts(
    official_v2_files: tuple[Path, Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    checkpoint, generator_file, state = official_v2_files
    model = load_triplanenet(checkpoint, generator=generator_file)
    assert model.version == 2 and model.config.triplane.upsampling == "nearest"
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())
    # Our safe format keeps the version and the decoder variant.
    converted = tmp_path / "v2.safetensors"
    result = CliRunner().invoke(app, ["convert", str(checkpoint), str(converted), "--generator", str(generator_file)])
    assert result.exit_code == 0, result.output
    assert "TriPlaneNet v2" in result.output
    again = load_triplanenet(converted)
    assert again.config == model.config
    assert torch.equal(again.latent_avg, model.latent_avg)
    assert torch.equal(
        again.triplanenet_encoder.final_head_two[0].weight, model.triplanenet_encoder.final_head_two[0].weight
    )


def test_invert_command_on_an_official_v2_checkpoint(
    official_v2_files: tuple[Path, Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    checkpoint, generator_file, _ = official_v2_files
    image = (np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "face.png")
    label = camera_label(torch.tensor(0.3), torch.tensor(-0.1))[0].tolist()
    (tmp_path / "face.json").write_text(json.dumps({"label": label}))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "invert", str(tmp_path / "face.png"), "--checkpoint", str(checkpoint), "--generator", str(generator_file),
            "--depth-samples", "6", "--views=-0.5,0.5", "--mesh", "--mesh-resolution", "24", "--video",
            "--frames", "2", "--device", "cpu", "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = out / "face"
    for name in (
        "input.png",
        "reconstruction.png",
        "novel_views.png",
        "depth.png",
        "depth.npy",
        "comparison.png",
        "inversion.safetensors",
        "mesh.ply",
        "orbit.mp4",
    ):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    assert np.asarray(Image.open(folder / "reconstruction.png")).shape == (512, 512, 3)
    assert np.isfinite(np.load(folder / "depth.npy")).all()


# ---------------------------------------------------------------------------------------------------------------------
# The tiny v2 model: mirror inputs, targets, CTTR, inversions, edits


@pytest.fixture(scope="module")
def tiny_v2() -> TriPlaneNet:
    torch.manual_seed(0)
    model = TriPlaneNet(TriPlaneNetConfig.tiny(2)).eval()
    model.set_latent_avg(torch.randn(model.config.generator.w_dim))
    return model


def _inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    rng = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, 64, 64, generator=rng) * 2 - 1
    return x, camera_label(torch.linspace(-0.3, 0.4, batch), torch.full((batch,), 0.1))


def test_v2_mirror_inputs_default_to_the_flipped_image_and_the_mirror_camera(tiny_v2: TriPlaneNet) -> None:
    x, c = _inputs()
    with torch.no_grad():
        default = tiny_v2(x, c, deterministic=True)
        explicit = tiny_v2(x, c, deterministic=True, x_mirror=x.flip(-1), camera_mirror=mirror_label(c))
        other = tiny_v2(x, c, deterministic=True, x_mirror=torch.zeros_like(x))
    assert torch.equal(default.image, explicit.image) and torch.equal(default.planes, explicit.planes)
    assert not torch.allclose(default.offsets, other.offsets)  # the mirror image really feeds the second branch
    assert default.image_psp_mirror is not None and default.image_target is None
    # The mirror render of the first branch is its render at the mirror camera.
    ws = default.ws
    mirror = tiny_v2.decoder.synthesis(ws, mirror_label(c), deterministic=True).image
    torch.testing.assert_close(default.image_psp_mirror, tiny_v2.pool_to_input(mirror), atol=1e-5, rtol=1e-5)


def test_v2_target_cameras(tiny_v2: TriPlaneNet) -> None:
    x, c = _inputs()
    novel = camera_label(torch.tensor([0.6, -0.6]), torch.zeros(2))
    with torch.no_grad():
        to_mirror = tiny_v2(x, c, "mirror", deterministic=True)
        to_novel = tiny_v2(x, c, novel, deterministic=True, resize=False)
    assert to_mirror.image_target is not None and to_mirror.depth_target is not None
    direct = tiny_v2.decoder.render(to_novel.planes, to_novel.ws, novel, deterministic=True)
    assert to_novel.image_target is not None
    torch.testing.assert_close(to_novel.image_target, direct.image, atol=1e-5, rtol=1e-5)
    assert to_novel.image.shape == (2, 3, 128, 128)
    with pytest.raises(ConfigError, match="'mirror'"):
        tiny_v2(x, c, "novel")  # type: ignore[arg-type]


def test_v2_cttr_corrects_the_refined_planes(tiny_v2: TriPlaneNet) -> None:
    x, c = _inputs(1)
    with torch.no_grad():
        plain = tiny_v2(x, c, deterministic=True)
        refined = tiny_v2(x, c, cttr=True, deterministic=True)
        again = tiny_v2.refine_offsets(x, plain.ws, plain.planes, c, deterministic=True)
    torch.testing.assert_close(refined.planes, plain.planes + again.view_as(plain.planes), atol=1e-5, rtol=1e-5)


def test_v2_gradients_reach_both_encoders() -> None:
    torch.manual_seed(0)
    model = TriPlaneNet(TriPlaneNetConfig.tiny(2)).train()
    x, c = _inputs()
    out = model(x, c, "mirror")
    assert out.image_psp_mirror is not None and out.image_target is not None
    (out.image_psp.square().mean() + out.image_psp_mirror.square().mean() + out.image_target.square().mean()).backward()
    assert all(p.grad is not None for p in model.psp_encoder.parameters())
    assert all(p.grad is not None for p in model.triplanenet_encoder.parameters())
    assert all(p.grad is None for p in model.decoder.parameters())


@pytest.mark.parametrize("version", [1, 2])
def test_compact_sizes_widen_only_the_second_branch(version: int) -> None:
    tiny, compact = TriPlaneNetConfig.tiny(version), TriPlaneNetConfig.compact(version)
    assert compact.psp == tiny.psp and compact.generator == tiny.generator
    assert TriPlaneNetConfig.from_dict(compact.to_dict()) == compact
    torch.manual_seed(0)
    small, wide = TriPlaneNet(tiny), TriPlaneNet(compact)
    count = lambda m: sum(p.numel() for p in m.triplanenet_encoder.parameters())  # noqa: E731
    assert count(wide) > 5 * count(small)
    x, c = _inputs()
    with torch.no_grad():
        out = wide(x, c, deterministic=True)
    assert out.offsets.shape == small(x, c, deterministic=True).offsets.shape


def test_v2_inversion_edit_and_safetensors_round_trip(tiny_v2: TriPlaneNet, tmp_path: Path) -> None:
    x, c = _inputs(1)
    inversion = TriPlaneNetInverter(tiny_v2).invert(x[0], c[0])
    with torch.no_grad():
        out = tiny_v2(x, c, deterministic=True)
    torch.testing.assert_close(inversion.planes(), out.planes, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inversion.render().image, out.synthesis.image, atol=1e-5, rtol=1e-5)
    # eq. 6's "encoder" mode re-runs the v2 second branch on G(w): it needs the mirror view of G(w) too.
    w = out.ws[:, 0]
    offsets = reencode_offsets(tiny_v2, x[0], c, w)
    assert offsets.shape == out.offsets.shape and torch.isfinite(offsets).all()
    path = tmp_path / "v2.safetensors"
    save_triplanenet(tiny_v2, path)
    loaded = load_triplanenet(path)
    assert loaded.version == 2 and loaded.config == tiny_v2.config


def test_tiny_v2_preset_runs_the_commands(tmp_path: Path) -> None:
    image = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "face.png")
    label = camera_label(torch.tensor(0.2), torch.tensor(0.0))[0].tolist()
    (tmp_path / "face.json").write_text(json.dumps({"label": label}))
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["invert", str(tmp_path / "face.png"), "--preset", "tiny-v2", "--views", "0", "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "face" / "reconstruction.png").is_file()
    result = runner.invoke(app, ["invert", str(tmp_path / "face.png"), "--preset", "tiny-v3", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "'tiny' or 'tiny-v2'" in result.output and "Traceback" not in result.output


def test_commands_take_a_v2_model_file(tiny_v2: TriPlaneNet, tmp_path: Path) -> None:
    """invert, directions, edit, eval, bench and the web demo with a v2 model (the official loader is covered above;
    every command reads its model through the same ``load_triplanenet``)."""
    model_file = tmp_path / "v2.safetensors"
    save_triplanenet(tiny_v2, model_file)
    image = (np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "face.png")
    label = camera_label(torch.tensor(-0.2), torch.tensor(0.05))[0].tolist()
    (tmp_path / "face.json").write_text(json.dumps({"label": label}))
    runner = CliRunner()

    def run(*args: str) -> None:
        result = runner.invoke(app, [*args, "--device", "cpu"], catch_exceptions=False)
        assert result.exit_code == 0, result.output

    model = ["--model", str(model_file)]
    run("invert", str(tmp_path / "face.png"), *model, "--views", "0", "--out", str(tmp_path / "inv"))
    inversion = tmp_path / "inv" / "face" / "inversion.safetensors"
    assert inversion.is_file()
    dirs = tmp_path / "dirs.safetensors"
    run("directions", *model, "--samples", "200", "--components", "2", "--out", str(dirs))
    run(
        "edit", str(inversion), *model, "--direction", "pc0", "--directions", str(dirs), "--strengths=-1,0,1",
        "--views", "0", "--fit-steps", "2", "--out", str(tmp_path / "edit"),
    )  # fmt: skip
    assert any((tmp_path / "edit").rglob("*.png"))
    run(
        "eval", *model, "--method", "triplanenet,triplanenet+cttr", "--heads", "1", "--yaws", "0.4",
        "--no-mesh-ad", "--out", str(tmp_path / "eval"),
    )  # fmt: skip
    assert "triplanenet+cttr" in (tmp_path / "eval" / "report.md").read_text()
    run(
        "bench", "--checkpoint", str(model_file), "--workloads", "encode,invert,train_step", "--batch-sizes", "1",
        "--repeats", "1", "--warmup", "0", "--out", str(tmp_path / "bench"),
    )  # fmt: skip
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert bench["meta"]["model"]["version"] == 2

    from triplanenet.editing.directions import load_directions
    from triplanenet.web.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    client = TestClient(create_app(model=tiny_v2, directions=load_directions(dirs), fit_steps=2, examples=1))
    response = client.post("/api/invert", data={"example": "head0"})
    assert response.status_code == 200, response.text
