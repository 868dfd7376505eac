"""TriPlaneNet encoders: official key layout, parameter counts, official-code parity, tiny configs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import assert_parity, fill_module, load_fixture, read_keys_tsv
from triplanenet.encoders import (
    GradualStyleEncoder,
    IRSEBackbone,
    IRSEBackboneConfig,
    IRSEBody,
    IRSEConfig,
    PSPEncoderConfig,
    TriPlaneEncoder,
    TriPlaneEncoderConfig,
)
from triplanenet.errors import ConfigError, InputImageError

# The official code and ours run the same float32 CPU kernels in the same order, so parity is bit-exact on
# the machine that recorded the fixture; the tolerance (fixtures/README.md) leaves room for other BLAS/thread
# setups.
ATOL = 1e-4
RTOL = 1e-4


def _meta(factory: type[nn.Module], cfg: object) -> nn.Module:
    """Build a module on the meta device (no memory, no init) — enough for keys, shapes and counts."""
    with torch.device("meta"):
        return factory(cfg)


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _filled(factory: type[nn.Module], cfg: object, prefix: str) -> nn.Module:
    """Official-size module with the reference deterministic weights, in eval mode (skips default init)."""
    module = _meta(factory, cfg)
    module.to_empty(device="cpu")
    fill_module(module, seed=1, prefix=prefix)
    return module.eval()


# ------------------------------------------------------------------------------------------------------------
# Official layout


@pytest.mark.parametrize(
    ("factory", "cfg", "tsv", "prefix", "n_keys"),
    [
        (GradualStyleEncoder, PSPEncoderConfig.official(), "psp_encoder.tsv", "psp_encoder.", 565),
        (
            TriPlaneEncoder,
            TriPlaneEncoderConfig.official(),
            "triplanenet_encoder.tsv",
            "triplanenet_encoder.",
            441,
        ),
    ],
    ids=["psp", "triplane"],
)
def test_official_state_dict_matches_reference_keys(
    factory: type[nn.Module], cfg: object, tsv: str, prefix: str, n_keys: int
) -> None:
    mine = _shapes(_meta(factory, cfg))
    assert mine == read_keys_tsv(tsv)
    assert len(mine) == n_keys
    checkpoint = read_keys_tsv("triplanenet_v1_checkpoint.tsv")
    subset = {k[len(prefix) :]: v for k, v in checkpoint.items() if k.startswith(prefix)}
    assert mine == subset
    # Registration order matches the official modules too (matters for optimizer-state round trips).
    assert list(mine) == list(read_keys_tsv(tsv))


@pytest.mark.parametrize(
    ("factory", "cfg", "expected"),
    [
        (GradualStyleEncoder, PSPEncoderConfig.official(), 209_450_688),
        (TriPlaneEncoder, TriPlaneEncoderConfig.official(), 42_106_496),
        (IRSEBackbone, IRSEBackboneConfig.arcface_ir_se50(), 43_797_696),
        (IRSEBackbone, IRSEBackboneConfig.curricularface_ir101(), 65_128_768),
        # The reference's parameter counts of the official v2 encoder (upsample / pixelshuffle variants).
        (TriPlaneEncoder, TriPlaneEncoderConfig.official_v2("nearest"), 41_368_416),
        (TriPlaneEncoder, TriPlaneEncoderConfig.official_v2("pixelshuffle"), 42_191_168),
    ],
    ids=["psp", "triplane_v1", "arcface_ir_se50", "curricularface_ir101", "v2_nearest", "v2_pixelshuffle"],
)
def test_parameter_counts(factory: type[nn.Module], cfg: object, expected: int) -> None:
    assert _n_params(_meta(factory, cfg)) == expected


def test_face_recognition_backbone_layouts() -> None:
    arcface = _shapes(_meta(IRSEBackbone, IRSEBackboneConfig.arcface_ir_se50()))
    assert arcface["output_layer.0.weight"] == (512,)
    assert arcface["output_layer.3.weight"] == (512, 512 * 7 * 7)
    assert arcface["output_layer.4.weight"] == (512,)
    assert arcface["body.23.res_layer.5.fc1.weight"] == (32, 512, 1, 1)
    assert {k for k in arcface if "shortcut_layer.0" in k} == {f"body.{i}.shortcut_layer.0.weight" for i in (3, 7, 21)}
    curricular = _shapes(_meta(IRSEBackbone, IRSEBackboneConfig.curricularface_ir101()))
    assert "output_layer.4.weight" not in curricular
    assert "output_layer.4.running_mean" in curricular
    assert "body.48.res_layer.4.weight" in curricular and "body.49.res_layer.0.weight" not in curricular
    assert not any("res_layer.5" in k for k in curricular)


# ------------------------------------------------------------------------------------------------------------
# Numeric parity with the official code (encoders_seed1.pt)


@pytest.fixture(scope="module")
def fixture() -> dict:
    return load_fixture("encoders_seed1.pt")


@pytest.fixture(scope="module")
def psp_run(fixture: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    psp = _filled(GradualStyleEncoder, PSPEncoderConfig.official(), "psp_encoder.")
    with torch.no_grad():
        return psp.forward_with_features(fixture["x"])


@pytest.fixture(scope="module")
def triplane_run(fixture: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    enc = _filled(TriPlaneEncoder, TriPlaneEncoderConfig.official(), "triplanenet_encoder.")
    with torch.no_grad():
        return enc.forward_with_features(fixture["x6"])


def test_psp_matches_official(fixture: dict, psp_run: tuple[torch.Tensor, dict[str, torch.Tensor]]) -> None:
    codes, feats = psp_run
    assert codes.shape == (1, 14, 512)
    assert_parity("codes", codes, fixture["codes"], atol=ATOL, rtol=RTOL)
    for ours, official in (("stride4", "psp_c1"), ("stride8", "psp_c2"), ("stride16", "psp_c3")):
        assert_parity(official, feats[ours], fixture[official], atol=ATOL, rtol=RTOL)
    # TriPlaneNet adds latent_avg outside the encoder.
    assert_parity("codes_plus_avg", codes + fixture["latent_avg_14"], fixture["codes_plus_avg"], atol=ATOL, rtol=RTOL)


def test_triplane_encoder_matches_official(
    fixture: dict, triplane_run: tuple[torch.Tensor, dict[str, torch.Tensor]]
) -> None:
    out, feats = triplane_run
    assert out.shape == (1, 96, 256, 256)
    assert_parity("tri_body_out", feats["bottom"], fixture["tri_body_out"], atol=ATOL, rtol=RTOL)
    c3 = feats["c3"].double()
    c3_stats = torch.stack([c3.mean((2, 3)), c3.std((2, 3)), c3.abs().mean((2, 3))], dim=-1)
    assert_parity("tri_c3_stats", c3_stats, fixture["tri_c3_stats"].double(), atol=ATOL, rtol=RTOL)

    assert_parity("triplane_out_stride4", out[:, :, ::4, ::4], fixture["triplane_out_stride4"], atol=ATOL, rtol=RTOL)
    y0, x0 = (int(v) for v in fixture["triplane_out_crop_origin"])
    crop = fixture["triplane_out_crop"]
    h, w = crop.shape[-2:]
    torch.testing.assert_close(out[:, :, y0 : y0 + h, x0 : x0 + w], crop, atol=ATOL, rtol=RTOL)
    assert_parity("triplane_out_row0", out[:, :, 0, :], fixture["triplane_out_row0"], atol=ATOL, rtol=RTOL)

    o = out.double()
    stats = torch.stack([o.mean(), o.std(), o.abs().sum(), o.min(), o.max()])
    # abs-sum is over 6.3M values (≈8.6e5), so it gets a relative tolerance only.
    assert_parity("triplane_out_stats", stats, fixture["triplane_out_stats"].double(), atol=ATOL, rtol=RTOL)
    channel = torch.stack([o.mean((2, 3)), o.std((2, 3)), o.abs().mean((2, 3))], dim=-1)
    assert_parity(
        "triplane_out_channel_stats", channel, fixture["triplane_out_channel_stats"].double(), atol=ATOL, rtol=RTOL
    )


def test_v2_triplane_encoder_matches_official() -> None:
    """The v2 second branch alone: 9-channel input and the first-branch planes; the official module returns
    planes + residual, ours the residual."""
    fixture = load_fixture("triplanenet_v2_e2e_seed1.pt")
    enc = _filled(TriPlaneEncoder, TriPlaneEncoderConfig.official_v2("nearest"), "triplanenet_encoder.")
    planes = fixture["encoder_planes_small"].repeat_interleave(8, -2).repeat_interleave(8, -1)
    with torch.no_grad():
        out = planes + enc(fixture["encoder_x9"], planes)
    assert_parity("encoder_out_stride4", out[:, :, ::4, ::4], fixture["encoder_out_stride4"], atol=ATOL, rtol=RTOL)
    assert_parity("encoder_out_crop", out[:, :, 120:136, 120:136], fixture["encoder_out_crop"], atol=ATOL, rtol=RTOL)
    o = out.double()
    stats = torch.stack([o.mean(), o.std(), o.abs().sum(), o.min(), o.max()])
    assert_parity("encoder_out_stats", stats, fixture["encoder_out_stats"].double(), atol=ATOL, rtol=RTOL)


# ------------------------------------------------------------------------------------------------------------
# Tiny configs, both versions, the ArcFace-style backbone


def test_tiny_psp_shapes() -> None:
    cfg = PSPEncoderConfig.tiny()
    psp = GradualStyleEncoder(cfg).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        codes, feats = psp.forward_with_features(x)
    assert codes.shape == (2, cfg.n_styles, cfg.w_dim)
    assert feats["stride4"].shape == (2, cfg.body.channels[1], 16, 16)
    assert feats["stride8"].shape == (2, cfg.body.channels[2], 8, 8)
    assert feats["stride16"].shape == (2, cfg.body.channels[3], 4, 4)
    assert torch.isfinite(codes).all()
    # Train mode and backward work (BatchNorm with a batch of 2).
    psp.train()
    psp(x).square().mean().backward()
    assert psp.styles[13].linear.weight.grad is not None


@pytest.mark.parametrize(
    ("version", "upsampling"), [(1, "pixelshuffle"), (1, "nearest"), (2, "nearest"), (2, "pixelshuffle")]
)
def test_tiny_triplane_encoder_shapes(version: int, upsampling: str) -> None:
    cfg = TriPlaneEncoderConfig.tiny(version, upsampling)  # type: ignore[arg-type]
    enc = TriPlaneEncoder(cfg).eval()
    x = torch.randn(2, 3 * (version + 1), 64, 64)
    planes = torch.randn(2, 96, 64, 64) if version == 2 else None
    with torch.no_grad():
        out, feats = enc.forward_with_features(x, planes)
    assert out.shape == (2, 96, 64, 64)
    assert feats["c0"].shape[-1] == 32 and feats["c1"].shape[-1] == 16
    assert feats["c2"].shape[-1] == 8 and feats["c3"].shape[-1] == 4
    assert torch.isfinite(out).all()
    keys = set(enc.state_dict())
    head = "final_head" if version == 1 else "final_head_two"
    assert f"{head}.0.weight" in keys and not any(k.startswith("final_head.") for k in keys if version == 2)
    assert "up1.conv.double_conv.5.weight" in keys
    features = 8 // 4 if upsampling == "pixelshuffle" else 8
    assert enc.output_head[0].in_channels == features + (96 if version == 2 else 0)
    if version == 2:
        # The planes really feed the output.
        with torch.no_grad():
            other = enc(x, planes + 1.0)
        assert not torch.allclose(out, other)


@pytest.mark.parametrize("upsampling", ["nearest", "pixelshuffle"])
def test_v2_official_size_layouts(upsampling: str) -> None:
    cfg = TriPlaneEncoderConfig.official_v2(upsampling)  # type: ignore[arg-type]
    nearest = upsampling == "nearest"
    assert cfg.up_in_channels == ((1024, 768, 384, 192) if nearest else (1024, 384, 224, 128))
    assert cfg.head_in_channels == (160 if nearest else 120)
    enc = _meta(TriPlaneEncoder, cfg).eval()
    shapes = _shapes(enc)
    assert shapes["input_layer.0.weight"] == (64, 9, 3, 3)
    assert shapes["final_head_two.0.weight"] == (96, cfg.head_in_channels, 3, 3)
    assert "final_head.0.weight" not in shapes
    assert shapes["up2.conv.double_conv.1.weight"] == ((256, 768, 3, 3) if nearest else (384, 384, 3, 3))
    with torch.device("meta"):
        out, feats = enc.forward_with_features(torch.empty(2, 9, 256, 256), torch.empty(2, 96, 256, 256))
    assert out.shape == (2, 96, 256, 256)
    assert feats["bottom"].shape == (2, 512, 16, 16)


def test_backbone_embeddings_are_unit_norm() -> None:
    cfg = IRSEBackboneConfig.tiny()
    net = IRSEBackbone(cfg).eval()
    with torch.no_grad():
        emb = net(torch.rand(3, 3, cfg.input_size, cfg.input_size) * 2 - 1)
    assert emb.shape == (3, cfg.embedding_dim)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    body = IRSEBody(cfg.body).eval()
    with torch.no_grad():
        feats, taps = body.forward_taps(torch.randn(1, 3, 32, 32), cfg.body.stage_last_index)
    assert feats.shape == (1, cfg.body.channels[3], 2, 2)
    assert sorted(taps) == list(cfg.body.stage_last_index)


@settings(max_examples=20, deadline=None)
@given(
    units=st.tuples(*(st.integers(1, 3) for _ in range(4))),
    channels=st.tuples(*(st.sampled_from([4, 8, 12]) for _ in range(4))),
    decoder=st.tuples(*(st.sampled_from([4, 8, 16]) for _ in range(4))),
    version=st.sampled_from([1, 2]),
    upsampling=st.sampled_from(["pixelshuffle", "nearest"]),
    resolution=st.sampled_from([32, 64]),
    batch=st.integers(1, 3),
)
def test_triplane_shapes_property(
    units: tuple[int, int, int, int],
    channels: tuple[int, int, int, int],
    decoder: tuple[int, int, int, int],
    version: int,
    upsampling: str,
    resolution: int,
    batch: int,
) -> None:
    body = IRSEConfig(units=units, channels=channels, se_reduction=4, input_channels=3 * (version + 1))
    cfg = TriPlaneEncoderConfig(
        body=body,
        version=version,  # type: ignore[arg-type]
        upsampling=upsampling,  # type: ignore[arg-type]
        decoder_channels=decoder,
        head_channels=8,
        input_resolution=resolution,
    )
    assert body.stage_first_index[3] == sum(units[:3]) and body.stage_last_index[3] == sum(units) - 1
    with torch.device("meta"):
        enc = TriPlaneEncoder(cfg).eval()
        planes = torch.empty(batch, 96, resolution, resolution) if version == 2 else None
        out = enc(torch.empty(batch, 3 * (version + 1), resolution, resolution), planes)
    assert out.shape == (batch, 96, resolution, resolution)
    assert len(enc.body) == sum(units)


# ------------------------------------------------------------------------------------------------------------
# User errors


def test_bad_inputs_raise_clear_errors() -> None:
    psp = GradualStyleEncoder(PSPEncoderConfig.tiny())
    with pytest.raises(InputImageError, match="64, 64"):
        psp(torch.randn(1, 3, 32, 32))
    tiny = TriPlaneEncoder(TriPlaneEncoderConfig.tiny())
    with pytest.raises(ConfigError, match="takes no planes"):
        tiny(torch.randn(1, 6, 64, 64), torch.randn(1, 96, 64, 64))
    with pytest.raises(InputImageError):
        tiny(torch.randn(1, 3, 64, 64))
    v2 = TriPlaneEncoder(TriPlaneEncoderConfig.tiny(2))
    with pytest.raises(ConfigError, match="needs the first-branch planes"):
        v2(torch.randn(1, 9, 64, 64))
    with pytest.raises(InputImageError, match="planes"):
        v2(torch.randn(1, 9, 64, 64), torch.randn(1, 32, 64, 64))
    with pytest.raises(InputImageError):
        v2(torch.randn(1, 6, 64, 64), torch.randn(1, 96, 64, 64))


@pytest.mark.parametrize(
    "make",
    [
        lambda: IRSEConfig(channels=(8, 8, 8, 8), se_reduction=16),
        lambda: IRSEConfig(units=(3, 4, 14)),  # type: ignore[arg-type]
        lambda: IRSEConfig.from_num_layers(34),
        lambda: PSPEncoderConfig(coarse_ind=8, middle_ind=7),
        lambda: PSPEncoderConfig(input_resolution=100),
        lambda: TriPlaneEncoderConfig(decoder_channels=(512, 384, 256, 98)),
        lambda: TriPlaneEncoderConfig(version=3),  # type: ignore[arg-type]
        lambda: TriPlaneEncoderConfig(upsampling="bilinear"),  # type: ignore[arg-type]
        lambda: TriPlaneEncoderConfig(version=2),  # body still reads 6 channels
        lambda: IRSEBackboneConfig(input_size=100),
    ],
)
def test_invalid_configs_raise_config_error(make: Callable[[], object]) -> None:
    with pytest.raises(ConfigError):
        make()


def test_presets_accept_overrides() -> None:
    cfg = PSPEncoderConfig.tiny(w_dim=512)
    assert cfg.w_dim == 512 and cfg.input_resolution == 64
    assert dataclasses.replace(TriPlaneEncoderConfig.official(), out_channels=48).out_channels == 48
    assert IRSEConfig.from_num_layers(100, mode="ir").units == (3, 13, 30, 3)
