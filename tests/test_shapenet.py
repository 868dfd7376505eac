"""``shapenetcars128-64`` (EG3D's 2X super-resolution release) against ``eg3d_shapenet128_seed3.pt``, and every
official EG3D release as a config value.

Tolerances are the FFHQ fixture test's (fixtures README): planes / features / raw image / depth 1e-4, final 128²
image 1e-3. Observed on the CPU (1 thread): max |Δ| 3.6e-6 planes, 1.7e-6 feature image / image_raw / image,
1.3e-6 depth, 0 mapping.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import fill_module, load_fixture, read_keys_tsv
from triplanenet.cli.main import app
from triplanenet.eg3d.config import OFFICIAL_RELEASES, GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.errors import ConfigError


@pytest.fixture(scope="module")
def fixture() -> dict:
    return load_fixture("eg3d_shapenet128_seed3.pt")


@pytest.fixture(scope="module")
def shapenet_generator() -> TriPlaneGenerator:
    generator = TriPlaneGenerator(GeneratorConfig.shapenet128())
    fill_module(generator, seed=3)
    return generator.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def shapenet_synthesis(shapenet_generator: TriPlaneGenerator, fixture: dict):
    with torch.no_grad():
        return shapenet_generator.synthesis(fixture["ws"], fixture["c"], noise_mode="const", deterministic=True)


def _without_training_keys(config: GeneratorConfig) -> GeneratorConfig:
    return config.replace(rendering={"extra": {}})


def test_fixture_init_kwargs_are_the_shapenet_preset(fixture: dict) -> None:
    kwargs = fixture["meta"]["init_kwargs"]
    config = GeneratorConfig.from_official_kwargs(kwargs, fixture["meta"]["neural_rendering_resolution"])
    assert _without_training_keys(config) == GeneratorConfig.shapenet128()
    # Without a stored resolution (TriPlaneNet-style .pth) the SR module's input side is used: 64 here.
    assert GeneratorConfig.from_official_kwargs(kwargs).neural_rendering_resolution == 64
    assert config.sr_input_resolution == 64 and config.sr_scale == 2 and config.sr_channels == (128, 64)
    back = GeneratorConfig.from_official_kwargs(config.to_official_kwargs(), 64)
    assert back == config
    assert GeneratorConfig.from_dict(config.to_dict()) == config


def test_shapenet_state_dict_has_the_2x_layout() -> None:
    state = TriPlaneGenerator(GeneratorConfig.shapenet128()).state_dict()
    ffhq = read_keys_tsv("eg3d_G_ema.tsv")
    # Same backbone and decoder as FFHQ; the SR module has its own resample_filter and 128/64 channels.
    assert {k for k in state if not k.startswith("superresolution.")} == {
        k for k in ffhq if not k.startswith("superresolution.")
    }
    sr = {k: tuple(v.shape) for k, v in state.items() if k.startswith("superresolution.")}
    assert sr["superresolution.resample_filter"] == (4, 4)
    assert sr["superresolution.block0.conv0.weight"] == (128, 32, 3, 3)
    assert sr["superresolution.block0.conv0.noise_const"] == (64, 64)  # block0 stays at 64² (no upsampling)
    assert sr["superresolution.block1.conv0.weight"] == (64, 128, 3, 3)
    assert sr["superresolution.block1.conv1.noise_const"] == (128, 128)
    assert sr["superresolution.block1.torgb.weight"] == (3, 64, 1, 1)
    assert len(sr) == 39  # 8XDC: 38 (no module-level resample_filter)


def test_mapping_ignores_the_camera(shapenet_generator: TriPlaneGenerator, fixture: dict) -> None:
    with torch.no_grad():
        ws1 = shapenet_generator.mapping(fixture["z"], fixture["c"], truncation_psi=1.0)
        ws07 = shapenet_generator.mapping(fixture["z"], fixture["c"], truncation_psi=0.7)
        other_camera = shapenet_generator.mapping(fixture["z"], fixture["c"].flip(0), truncation_psi=1.0)
    torch.testing.assert_close(ws1, fixture["ws_mapping_psi1"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ws07, fixture["ws_mapping_psi07"], atol=1e-4, rtol=1e-5)
    assert torch.equal(ws1, other_camera)  # c_gen_conditioning_zero


def test_planes_match_fixture(shapenet_synthesis, fixture: dict) -> None:
    planes = shapenet_synthesis.planes.reshape(2, 96, 256, 256)
    row, col = (int(v) for v in fixture["planes_crop_origin"])
    torch.testing.assert_close(planes[:, :, ::8, ::8], fixture["planes_stride8"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        planes[:, :, row : row + 16, col : col + 16], fixture["planes_crop"], atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(planes[:, :, 0, :], fixture["planes_row0"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(planes[:, :, :, -1], fixture["planes_colLast"], atol=1e-4, rtol=1e-4)


def test_sampled_features_and_decoder_match_fixture(shapenet_generator, shapenet_synthesis, fixture: dict) -> None:
    from triplanenet.eg3d.triplane import sample_from_planes

    with torch.no_grad():
        features = sample_from_planes(shapenet_synthesis.planes, fixture["coords"], box_warp=1.6)
        rgb, sigma = shapenet_generator.decoder(features)
    torch.testing.assert_close(features, fixture["sampled_features"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rgb, fixture["decoder_rgb"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(sigma, fixture["decoder_sigma"], atol=1e-4, rtol=1e-4)


def test_rendered_images_match_fixture(shapenet_synthesis, fixture: dict) -> None:
    out = shapenet_synthesis
    assert out.image.shape == (2, 3, 128, 128)
    assert out.image_raw.shape == (2, 3, 64, 64)
    torch.testing.assert_close(out.feature_image, fixture["feature_image"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.image_raw, fixture["image_raw"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.image_depth, fixture["image_depth"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.image, fixture["image"], atol=1e-3, rtol=1e-3)
    # The marcher's output (white background) is what EG3D composited; its first 3 channels then carry
    # block0's RGB, as in the official 2X module (see SuperResolution.forward).
    composite = fixture["composite_rgb"].permute(0, 2, 1).reshape(2, 32, 64, 64)
    torch.testing.assert_close(out.feature_image[:, 3:], composite[:, 3:], atol=1e-4, rtol=1e-4)
    assert (out.image_raw - composite[:, :3]).abs().max() > 1e-2


@pytest.mark.parametrize("release", sorted(OFFICIAL_RELEASES))
def test_every_official_release_is_a_config(release: str) -> None:
    config = GeneratorConfig.official(release)
    assert GeneratorConfig.official(f"eg3d-{release}.pkl") == config
    nrr = int(release.rsplit("-", 1)[-1])
    assert config.neural_rendering_resolution == nrr
    expected_side = 128 if release.startswith("shapenet") else 512
    assert config.img_resolution == expected_side
    # The official kwargs round-trip through the loader's parser (what a .pkl / .pth of this release holds).
    assert GeneratorConfig.from_official_kwargs(config.to_official_kwargs(), nrr) == config
    generator = TriPlaneGenerator(config)
    if expected_side == 512:
        expected = read_keys_tsv("eg3d_G_ema.tsv")
        assert {k: tuple(v.shape) for k, v in generator.state_dict().items()} == expected


def test_unknown_release_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown EG3D release"):
        GeneratorConfig.official("ffhq1024")


@pytest.mark.parametrize(
    ("module", "side", "keys"),
    [
        (
            "SuperresolutionHybrid4X",
            256,
            {"block0.conv0.noise_const": (128, 128), "block1.torgb.weight": (3, 64, 1, 1)},
        ),
        (
            "SuperresolutionHybrid8X",
            512,
            {"block0.conv0.noise_const": (256, 256), "block1.torgb.weight": (3, 64, 1, 1)},
        ),
    ],
)
def test_other_official_sr_classes_build(module: str, side: int, keys: dict[str, tuple[int, ...]]) -> None:
    kwargs = GeneratorConfig.ffhq512().to_official_kwargs()
    kwargs["img_resolution"] = side
    kwargs["rendering_kwargs"]["superresolution_module"] = f"training.superresolution.{module}"
    config = GeneratorConfig.from_official_kwargs(kwargs)
    assert config.neural_rendering_resolution == 128 and config.sr_filter_buffer
    generator = TriPlaneGenerator(config).eval()
    state = generator.superresolution.state_dict()
    assert "resample_filter" in state
    for key, shape in keys.items():
        assert tuple(state[key].shape) == shape
    with pytest.raises(ConfigError, match="img_resolution"):
        GeneratorConfig.from_official_kwargs({**kwargs, "img_resolution": 1024})


def _small_shapenet_config() -> GeneratorConfig:
    """The ShapeNet architecture (2X SR, white background, 1.6 box) with a narrow backbone and few samples."""
    return GeneratorConfig.shapenet128().replace(
        channel_base=1024, channel_max=64, rendering={"depth_resolution": 12, "depth_resolution_importance": 12}
    )


def test_generate_renders_a_shapenet_pth(tmp_path: Path) -> None:
    """A generator written in TriPlaneNet's converted .pth layout (G_ema + init_kwargs + latent_avg)."""
    from triplanenet.io.checkpoints import load_generator

    config = _small_shapenet_config()
    torch.manual_seed(0)
    generator = TriPlaneGenerator(config)
    path = tmp_path / "shapenetcars128-64.pth"
    torch.save(
        {"G_ema": generator.state_dict(), "init_kwargs": config.to_official_kwargs(), "latent_avg": torch.zeros(512)},
        path,
    )
    loaded = load_generator(path)
    assert loaded.config == config
    out = tmp_path / "gen"
    result = CliRunner().invoke(
        app,
        ["generate", "--generator", str(path), "--seeds", "0", "--views=-0.3,0.3", "--out", str(out), "--device",
         "cpu", "--mesh", "--mesh-resolution", "24", "--mesh-level", "0"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(out / "seed0000_yaw+0.30.png"))
    assert image.shape == (128, 128, 3)
    depth = np.load(out / "seed0000_yaw+0.30_depth.npy")
    assert depth.shape == (64, 64)
    assert np.nanmin(depth) >= 0.1 and np.nanmax(depth) <= 2.6 + 2.5 / 11
    assert (out / "seed0000.ply").stat().st_size > 0
    assert json.loads((out / "summary.json").read_text())["seeds"] == [0]


def test_shapenet_network_pickle_loads_through_the_safe_path(tmp_path: Path, fake_persistent: type) -> None:
    """An NVIDIA-style network pickle (``torch_utils.persistence`` objects, the 2X classes by name, the live
    ``rendering_kwargs``) of a small ShapeNet generator: read without executing anything, then rendered."""
    import pickle
    from typing import Any

    from triplanenet.io.checkpoints import load_generator, read_generator_checkpoint

    official_names = {"superresolution": "SuperresolutionHybrid2X", "superresolution.block0": "SynthesisBlockNoUp"}

    def as_persistent(module: torch.nn.Module, prefix: str, extra: dict[str, Any] | None = None) -> Any:
        state = {
            "_parameters": dict(module._parameters),
            "_buffers": dict(module._buffers),
            "_non_persistent_buffers_set": set(module._non_persistent_buffers_set),
            "_modules": {
                name: as_persistent(child, f"{prefix}{name}")
                for name, child in module._modules.items()
                if child is not None and name != "renderer"
            },
            **(extra or {}),
        }
        return fake_persistent(official_names.get(prefix, type(module).__name__), state, "raise SystemExit")

    config = _small_shapenet_config()
    torch.manual_seed(1)
    generator = TriPlaneGenerator(config).eval()
    kwargs = config.to_official_kwargs()
    extra = {"_init_args": (), "_init_kwargs": kwargs, "rendering_kwargs": kwargs["rendering_kwargs"]}
    extra["neural_rendering_resolution"] = 64
    root = as_persistent(generator, "", extra)
    root.meta["class_name"] = "TriPlaneGenerator"
    path = tmp_path / "shapenetcars128-64.pkl"
    path.write_bytes(pickle.dumps({"G_ema": root, "training_set_kwargs": {}, "augment_pipe": None}, protocol=4))
    raw = read_generator_checkpoint(path)
    assert raw.source_format == "nvidia-pkl" and raw.neural_rendering_resolution == 64
    assert "superresolution.resample_filter" in raw.state_dict
    loaded = load_generator(path)
    assert loaded.config == config
    ws = torch.randn(1, loaded.num_ws, 512)
    c = torch.zeros(1, 25)
    c[0, :16] = torch.eye(4).flatten()
    c[0, 11] = 1.7
    c[0, 16:] = torch.tensor([4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1])
    with torch.no_grad():
        a = loaded.synthesis(ws, c, deterministic=True)
        b = generator.synthesis(ws, c, deterministic=True)
    assert torch.equal(a.image, b.image) and a.image.shape == (1, 3, 128, 128)
