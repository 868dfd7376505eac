"""The EG3D generator against the official fixtures (weights from the reference pack's ``weights.py``).

Tolerances: the official code on the same CPU differs from itself by up to 5.7e-6 (planes) and 2.6e-6 (image) between
thread counts (fixtures README). We assert the README's suggested bounds: planes/features/raw image/depth 1e-4 and the
final 512² image 1e-3. Measured max |Δ| (TRIPLANENET_PARITY_REPORT=1 prints each): up to 5.7e-6 on planes and 2.6e-6
on the image with one torch thread, the official code's own 1-vs-2-thread spread; the mapping is exactly equal.
"""

from __future__ import annotations

import pytest
import torch

from conftest import assert_parity, fill_module, load_fixture, read_keys_tsv
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator


@pytest.fixture(scope="module")
def fixture() -> dict:
    return load_fixture("eg3d_ffhq512_seed1.pt")


@pytest.fixture(scope="module")
def ffhq_generator(fixture: dict) -> TriPlaneGenerator:
    generator = TriPlaneGenerator(GeneratorConfig.ffhq512())
    fill_module(generator, seed=1)
    return generator.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def ffhq_synthesis(ffhq_generator: TriPlaneGenerator, fixture: dict):
    with torch.no_grad():
        return ffhq_generator.synthesis(fixture["ws"], fixture["c"], noise_mode="const", deterministic=True)


def test_state_dict_matches_official_keys_and_shapes() -> None:
    expected = read_keys_tsv("eg3d_G_ema.tsv")
    generator = TriPlaneGenerator(GeneratorConfig.ffhq512())
    actual = {key: tuple(value.shape) for key, value in generator.state_dict().items()}
    assert actual == expected
    assert sum(p.numel() for p in generator.parameters()) == 30_662_136


def test_tiny_config_builds_and_has_fewer_ws() -> None:
    generator = TriPlaneGenerator(GeneratorConfig.tiny())
    assert generator.num_ws == 10
    assert sum(p.numel() for p in generator.parameters()) < 1_000_000


def test_mapping_matches_fixture(ffhq_generator: TriPlaneGenerator, fixture: dict) -> None:
    with torch.no_grad():
        ws1 = ffhq_generator.mapping(fixture["z"], fixture["c"], truncation_psi=1.0)
        ws07 = ffhq_generator.mapping(fixture["z"], fixture["c"], truncation_psi=0.7)
    assert_parity("ws_mapping_psi1", ws1, fixture["ws_mapping_psi1"], atol=1e-4, rtol=1e-5)
    assert_parity("ws_mapping_psi07", ws07, fixture["ws_mapping_psi07"], atol=1e-4, rtol=1e-5)


def test_planes_match_fixture(ffhq_synthesis, fixture: dict) -> None:
    planes = ffhq_synthesis.planes.reshape(2, 96, 256, 256)
    row, col = (int(v) for v in fixture["planes_crop_origin"])
    assert_parity("planes_stride8", planes[:, :, ::8, ::8], fixture["planes_stride8"], atol=1e-4, rtol=1e-4)
    assert_parity(
        "planes_crop", planes[:, :, row : row + 16, col : col + 16], fixture["planes_crop"], atol=1e-4, rtol=1e-4
    )
    assert_parity("planes_row0", planes[:, :, 0, :], fixture["planes_row0"], atol=1e-4, rtol=1e-4)
    assert_parity("planes_colLast", planes[:, :, :, -1], fixture["planes_colLast"], atol=1e-4, rtol=1e-4)
    p = planes.double()
    stats = torch.stack([p.mean(), p.std(), p.abs().sum(), p.min(), p.max()])
    assert_parity("planes_stats", stats, fixture["planes_stats"], rtol=1e-5, atol=1e-5)


def test_sampled_features_and_decoder_match_fixture(ffhq_generator, ffhq_synthesis, fixture: dict) -> None:
    from triplanenet.eg3d.triplane import sample_from_planes

    with torch.no_grad():
        features = sample_from_planes(ffhq_synthesis.planes, fixture["coords"], box_warp=1.0)
        rgb, sigma = ffhq_generator.decoder(features)
    assert_parity("sampled_features", features, fixture["sampled_features"], atol=1e-4, rtol=1e-4)
    assert_parity("decoder_rgb", rgb, fixture["decoder_rgb"], atol=1e-4, rtol=1e-4)
    assert_parity("decoder_sigma", sigma, fixture["decoder_sigma"], atol=1e-4, rtol=1e-4)


def test_rendered_images_match_fixture(ffhq_synthesis, fixture: dict) -> None:
    out = ffhq_synthesis
    assert_parity("feature_image", out.feature_image, fixture["feature_image"], atol=1e-4, rtol=1e-4)
    assert_parity("image_raw", out.image_raw, fixture["image_raw"], atol=1e-4, rtol=1e-4)
    assert_parity("image_depth", out.image_depth, fixture["image_depth"], atol=1e-4, rtol=1e-4)
    assert_parity("image", out.image, fixture["image"], atol=1e-3, rtol=1e-3)
    assert out.image.shape == (2, 3, 512, 512)
    assert out["image_raw"].shape == (2, 3, 128, 128)


def test_offsets_are_added_to_backbone_planes(ffhq_generator, fixture: dict) -> None:
    tiny = TriPlaneGenerator(GeneratorConfig.tiny()).eval()
    ws = torch.randn(1, tiny.num_ws, tiny.config.w_dim)
    offsets = torch.randn(1, tiny.config.backbone_channels, 64, 64)
    with torch.no_grad():
        base = tiny.planes(ws)
        shifted = tiny.planes(ws, offsets=offsets)
    torch.testing.assert_close(shifted - base, offsets.view_as(base), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="offsets must have shape"):
        tiny.planes(ws, offsets=offsets[:, :3])


def test_noise_modes_and_stochastic_rendering() -> None:
    generator = TriPlaneGenerator(GeneratorConfig.tiny()).eval()
    for layer in generator.modules():
        if hasattr(layer, "noise_strength"):
            layer.noise_strength.data.fill_(0.5)
    ws = torch.randn(1, generator.num_ws, generator.config.w_dim)
    with torch.no_grad():
        const_a = generator.planes(ws, noise_mode="const")
        const_b = generator.planes(ws, noise_mode="const")
        random_a = generator.planes(ws, noise_mode="random")
        none_a = generator.planes(ws, noise_mode="none")
    assert torch.equal(const_a, const_b)
    assert not torch.allclose(const_a, random_a)
    assert not torch.allclose(const_a, none_a)


def test_deterministic_rendering_is_repeatable_and_jitter_is_seeded() -> None:
    from triplanenet.eg3d.camera import camera_label

    generator = TriPlaneGenerator(GeneratorConfig.tiny()).eval()
    ws = torch.randn(2, generator.num_ws, generator.config.w_dim)
    c = camera_label(torch.tensor([0.0, 0.3]), torch.tensor([0.0, -0.1]))
    with torch.no_grad():
        a = generator.synthesis(ws, c, deterministic=True).image
        b = generator.synthesis(ws, c, deterministic=True).image
        s1 = generator.synthesis(ws, c, generator=torch.Generator().manual_seed(3)).image
        s2 = generator.synthesis(ws, c, generator=torch.Generator().manual_seed(3)).image
        s3 = generator.synthesis(ws, c, generator=torch.Generator().manual_seed(4)).image
    assert torch.equal(a, b)
    assert torch.equal(s1, s2)
    assert not torch.equal(s1, s3)
    assert a.shape == (2, 3, 128, 128)
