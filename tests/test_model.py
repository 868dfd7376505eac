"""TriPlaneNet (both branches + generator) against the official end-to-end fixture, and the Inversion API."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import assert_parity, fill_module, load_fixture, read_keys_tsv
from triplanenet.eg3d.camera import camera_label
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.errors import CheckpointError, ConfigError, InputImageError
from triplanenet.inversion import Inversion
from triplanenet.inverters import TriPlaneNetInverter
from triplanenet.io.model_checkpoints import load_triplanenet, save_triplanenet
from triplanenet.model import TriPlaneNet, TriPlaneNetConfig


def test_state_dict_matches_official_v1_checkpoint_keys() -> None:
    expected = read_keys_tsv("triplanenet_v1_checkpoint.tsv")
    with torch.device("meta"):
        model = TriPlaneNet(TriPlaneNetConfig.official())
    actual = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert actual == expected
    assert len(actual) == 1182
    assert "latent_avg" not in actual


def test_end_to_end_matches_official_fixture() -> None:
    fixture = load_fixture("triplanenet_v1_e2e_seed1.pt")
    # The fixture was recorded like the official inference script: 96 + 96 depth samples.
    generator_config = GeneratorConfig.ffhq512().replace(
        rendering={"depth_resolution": 96, "depth_resolution_importance": 96}
    )
    model = TriPlaneNet(TriPlaneNetConfig.official(generator_config))
    fill_module(model.psp_encoder, seed=1, prefix="psp_encoder.")
    fill_module(model.triplanenet_encoder, seed=1, prefix="triplanenet_encoder.")
    fill_module(model.decoder, seed=1)
    model.set_latent_avg(fixture["latent_avg"])
    model.eval()
    with torch.no_grad():
        out = model(fixture["x"], fixture["c"], target_camera=fixture["novel_view_c"], deterministic=True)
    assert_parity("codes", out.ws, fixture["codes"], atol=1e-4, rtol=1e-4)
    assert_parity("y_hat_psp", out.image_psp, fixture["y_hat_psp"], atol=1e-3, rtol=1e-3)
    assert out.image_target is not None and out.image_psp_mirror is None
    assert_parity("y_hat", out.image_target, fixture["y_hat"], atol=1e-3, rtol=1e-3)
    assert_parity(
        "triplane_offsets_stride4",
        out.offsets[:, :, ::4, ::4],
        fixture["triplane_offsets_stride4"],
        atol=1e-4,
        rtol=1e-4,
    )
    assert_parity(
        "triplane_offsets_crop",
        out.offsets[:, :, 120:136, 120:136],
        fixture["triplane_offsets_crop"],
        atol=1e-4,
        rtol=1e-4,
    )


@pytest.fixture(scope="module")
def tiny_model() -> TriPlaneNet:
    torch.manual_seed(0)
    model = TriPlaneNet(TriPlaneNetConfig.tiny()).eval()
    model.set_latent_avg(torch.randn(model.config.generator.w_dim))
    return model


def _inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, 64, 64, generator=generator) * 2 - 1
    c = camera_label(torch.linspace(-0.3, 0.3, batch), torch.zeros(batch))
    return x, c


def test_forward_shapes_and_branch_structure(tiny_model: TriPlaneNet) -> None:
    x, c = _inputs()
    with torch.no_grad():
        out = tiny_model(x, c, deterministic=True)
        out_no_resize = tiny_model(x, c, resize=False, deterministic=True)
    assert out.image.shape == out.image_psp.shape == (2, 3, 64, 64)
    assert out_no_resize.image.shape == (2, 3, 128, 128)
    assert out.offsets.shape == (2, 24, 64, 64)
    assert out.ws.shape == (2, 10, 64)
    # The final planes are the backbone planes of the codes plus the offsets.
    base = tiny_model.decoder.planes(out.ws)
    torch.testing.assert_close(out.synthesis.planes, base + out.offsets.view_as(base), atol=1e-5, rtol=1e-5)
    assert out.planes is out.synthesis.planes
    # v1 renders no mirror view and, without a target camera, no novel view.
    assert out.image_psp_mirror is None and out.image_target is None and out.synthesis_target is None


def test_gradients_reach_both_encoders_but_not_the_generator(tiny_model: TriPlaneNet) -> None:
    model = TriPlaneNet(TriPlaneNetConfig.tiny()).train()
    x, c = _inputs()
    out = model(x, c)
    (out.image_psp.square().mean() + out.image.square().mean()).backward()
    assert all(p.grad is not None for p in model.psp_encoder.parameters() if p.requires_grad)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.triplanenet_encoder.parameters())
    assert all(p.grad is None for p in model.decoder.parameters())
    assert not model.decoder.training


def test_cttr_replaces_offsets(tiny_model: TriPlaneNet) -> None:
    x, c = _inputs()
    with torch.no_grad():
        plain = tiny_model(x, c, deterministic=True)
        refined = tiny_model(x, c, cttr=True, deterministic=True)
    assert not torch.allclose(plain.offsets, refined.offsets)
    torch.testing.assert_close(plain.image_psp, refined.image_psp)


def test_bad_inputs_and_configs(tiny_model: TriPlaneNet) -> None:
    _, c = _inputs(1)
    with pytest.raises(InputImageError, match="expects"):
        tiny_model(torch.zeros(1, 3, 32, 32), c)
    with pytest.raises(ConfigError, match="latent_avg"):
        tiny_model.set_latent_avg(torch.zeros(7))
    config = TriPlaneNetConfig.tiny()
    with pytest.raises(ConfigError, match="codes"):
        TriPlaneNetConfig(generator=GeneratorConfig.ffhq512(), psp=config.psp, triplane=config.triplane)


def test_inversion_save_load_renders_identically(tiny_model: TriPlaneNet, tmp_path: Path) -> None:
    x, c = _inputs(1)
    inverter = TriPlaneNetInverter(tiny_model)
    inversion = inverter.invert(x[0], c[0])
    assert inversion.method == "triplanenet"
    path = tmp_path / "latent.safetensors"
    inversion.save(path)
    again = Inversion.load(path, tiny_model.decoder)
    torch.testing.assert_close(again.render().image, inversion.render().image, atol=0, rtol=0)
    assert inversion.novel_views([-0.5, 0.5]).shape == (2, 3, 128, 128)
    assert inversion.depth().shape == (1, 1, 32, 32)
    first_branch = TriPlaneNetInverter(tiny_model, first_branch_only=True).invert(x[0], c[0])
    assert first_branch.offsets is None and first_branch.method == "w+-pred"
    with pytest.raises(CheckpointError, match="not a triplanenet inversion"):
        (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
        Inversion.load(tmp_path / "bad.safetensors", tiny_model.decoder)


def test_model_safetensors_round_trip_and_errors(tiny_model: TriPlaneNet, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_triplanenet(tiny_model, path)
    loaded = load_triplanenet(path)
    for (key, a), (_, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), key
    torch.testing.assert_close(loaded.latent_avg, tiny_model.latent_avg)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_triplanenet(truncated)
    official_like = tmp_path / "official.pth"
    torch.save({"state_dict": tiny_model.state_dict(), "opts": {"n_styles": 10}}, official_like)
    with pytest.raises(CheckpointError, match="latent_avg"):
        load_triplanenet(official_like)
    with pytest.raises(CheckpointError, match="not found"):
        load_triplanenet(tmp_path / "missing.pth")


@pytest.mark.slow
def test_official_format_checkpoint_loads_strictly(tmp_path: Path) -> None:
    """Write files in the official layouts (generator .pth + triplanenet_final.pth) and load them back."""
    generator_config = GeneratorConfig.ffhq512()
    model = TriPlaneNet(TriPlaneNetConfig.official(generator_config))
    fill_module(model.psp_encoder, seed=1, prefix="psp_encoder.")
    fill_module(model.triplanenet_encoder, seed=1, prefix="triplanenet_encoder.")
    fill_module(model.decoder, seed=1)
    latent_avg = torch.randn(512)
    generator_file = tmp_path / "ffhq512-128.pth"
    torch.save(
        {
            "G_ema": model.decoder.state_dict(),
            "init_kwargs": generator_config.to_official_kwargs(),
            "latent_avg": latent_avg,
        },
        generator_file,
    )
    checkpoint = tmp_path / "triplanenet_final.pth"
    torch.save({"state_dict": model.state_dict(), "opts": {"n_styles": 14}, "step": 500000}, checkpoint)
    loaded = load_triplanenet(checkpoint, generator=generator_file)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.testing.assert_close(loaded.latent_avg, latent_avg.repeat(14, 1))
    assert loaded.decoder.neural_rendering_resolution == 128
