"""Widening the second branch keeps its output exactly where it was and leaves every added weight trainable."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from triplanenet.encoders.config import TriPlaneEncoderConfig
from triplanenet.encoders.triplane_unet import TriPlaneEncoder
from triplanenet.encoders.widen import widen_triplane_encoder
from triplanenet.errors import ConfigError


def _trained_looking(cfg: TriPlaneEncoderConfig, seed: int = 0) -> TriPlaneEncoder:
    """A narrow branch whose batch-norm statistics and PReLU slopes are not the defaults (as after training)."""
    torch.manual_seed(seed)
    encoder = TriPlaneEncoder(cfg)
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_()
            module.bias.data.normal_()
        elif isinstance(module, torch.nn.PReLU):
            module.weight.data.uniform_(-0.5, 0.5)
    return encoder


def _inputs(cfg: TriPlaneEncoderConfig, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor | None]:
    torch.manual_seed(1)
    r = cfg.input_resolution
    x = torch.randn(batch, cfg.image_channels, r, r)
    planes = torch.randn(batch, cfg.plane_channels, r, r) if cfg.reads_planes else None
    return x, planes


CASES = [
    pytest.param(TriPlaneEncoderConfig.compact(2, out_channels=48, plane_channels=48), 1.5, id="v2-nearest-compact"),
    pytest.param(TriPlaneEncoderConfig.tiny(1), 2, id="v1-pixelshuffle-tiny"),
    pytest.param(TriPlaneEncoderConfig.tiny(2, "pixelshuffle"), 3, id="v2-pixelshuffle-tiny"),
]


@pytest.mark.parametrize(("cfg", "factor"), CASES)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_widened_branch_computes_the_same_output(cfg: TriPlaneEncoderConfig, factor: float, training: bool) -> None:
    narrow = _trained_looking(cfg).train(training)
    wide = widen_triplane_encoder(narrow, cfg.widened(factor))
    assert wide.training == training
    assert sum(p.numel() for p in wide.parameters()) > 1.5 * sum(p.numel() for p in narrow.parameters())
    x, planes = _inputs(cfg)
    with torch.no_grad():
        expected = narrow(x, planes)
        got = wide(x, planes)
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=1e-5)
    # and it is not the trivial answer: the narrow output is far from zero
    assert expected.abs().mean() > 1e-2


@pytest.mark.parametrize(("cfg", "factor"), CASES)
def test_every_added_weight_gets_a_gradient(cfg: TriPlaneEncoderConfig, factor: float) -> None:
    narrow = _trained_looking(cfg)
    wide = widen_triplane_encoder(narrow, cfg.widened(factor))
    x, planes = _inputs(cfg)
    wide(x, planes).square().mean().backward()
    kept_out, kept_in = cfg.body.channels[1], cfg.body.channels[0]
    for name, param in wide.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    # The first unit of stage 2: the zero block (kept outputs <- added inputs) learns.
    conv = wide.body[cfg.body.units[0]].res_layer[1].weight
    block, grad = conv[:kept_out, kept_in:], conv.grad[:kept_out, kept_in:]
    assert block.numel() > 0 and torch.equal(block, torch.zeros_like(block))
    assert grad.abs().max() > 0
    # The head's last convolution reads the added hidden channels with zero weights, and they learn too.
    last = wide.output_head[4].weight
    assert torch.equal(last[:, cfg.head_channels :], torch.zeros_like(last[:, cfg.head_channels :]))
    assert last.grad[:, cfg.head_channels :].abs().max() > 0


def test_widening_is_seeded_and_keeps_the_narrow_weights() -> None:
    cfg = TriPlaneEncoderConfig.tiny(2)
    narrow = _trained_looking(cfg)
    torch.manual_seed(7)
    first = widen_triplane_encoder(narrow, cfg.widened(2)).state_dict()
    torch.manual_seed(7)
    second = widen_triplane_encoder(narrow, cfg.widened(2)).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    c0 = cfg.body.channels[0]
    torch.testing.assert_close(first["input_layer.0.weight"][:c0], narrow.state_dict()["input_layer.0.weight"])
    # up1 reads [skip (body.channels[3]), bottom (body.channels[3])]: the narrow bottom sits after the wide skip.
    skip_n, skip_w = cfg.body.channels[3], 2 * cfg.body.channels[3]
    old = narrow.state_dict()["up1.conv.double_conv.0.running_mean"]
    new = first["up1.conv.double_conv.0.running_mean"]
    torch.testing.assert_close(new[:skip_n], old[:skip_n])
    torch.testing.assert_close(new[skip_w : skip_w + skip_n], old[skip_n:])


def test_factor_one_is_the_same_config() -> None:
    cfg = TriPlaneEncoderConfig.compact(2)
    assert cfg.widened(1) == cfg
    wide = cfg.widened(1.5)
    assert wide.body.channels == (48, 72, 96, 144) and wide.decoder_channels == (144, 96, 72, 48)
    assert wide.head_channels == 96 and wide.out_channels == cfg.out_channels


@given(st.floats(min_value=1.0, max_value=4.0))
@settings(max_examples=40, deadline=None)
def test_widened_widths_are_whole_or_refused(factor: float) -> None:
    cfg = TriPlaneEncoderConfig.tiny(2)
    try:
        wide = cfg.widened(factor)
    except ConfigError as exc:
        assert "whole numbers" in str(exc)
        return
    widths = (*wide.body.channels, *wide.decoder_channels, wide.head_channels)
    narrow = (*cfg.body.channels, *cfg.decoder_channels, cfg.head_channels)
    assert all(w == pytest.approx(n * factor) for n, w in zip(narrow, widths, strict=True))


@pytest.mark.parametrize("factor", [0.5, 0, -1, True, "2", 100])
def test_bad_factors_are_refused(factor: object) -> None:
    with pytest.raises(ConfigError, match="width factor"):
        TriPlaneEncoderConfig.tiny(2).widened(factor)  # type: ignore[arg-type]


def test_targets_that_are_not_a_widening_are_refused() -> None:
    cfg = TriPlaneEncoderConfig.tiny(2)
    narrow = TriPlaneEncoder(cfg.widened(2))
    with pytest.raises(ConfigError, match="narrower"):
        widen_triplane_encoder(narrow, cfg)
    deeper = dataclasses.replace(cfg, body=dataclasses.replace(cfg.body, units=(2, 1, 1, 1)))
    with pytest.raises(ConfigError, match=r"body\.units differs"):
        widen_triplane_encoder(TriPlaneEncoder(cfg), deeper)
    with pytest.raises(ConfigError, match="version differs"):
        widen_triplane_encoder(TriPlaneEncoder(cfg), TriPlaneEncoderConfig.tiny(1))
