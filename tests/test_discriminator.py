"""The StyleGAN2-ADA residual discriminator and the adversarial losses of v2 training.

Fixture parity (``discriminator_seed1.pt``, weights from the reference ``weights.fill`` rule): logits within 1e-4,
the tolerance the fixtures README suggests for fp32 CPU outputs; we observe about 3e-7. The fixture's activations
stay far below ``conv_clamp`` (max ~5), so the clamp is tested separately.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import fill_module, load_fixture, read_keys_tsv
from triplanenet.eg3d.layers import conv2d_down, downsample2d, setup_filter, upfirdn2d
from triplanenet.errors import CheckpointError, ConfigError, InputImageError
from triplanenet.io.discriminator_checkpoints import load_discriminator
from triplanenet.losses import (
    Discriminator,
    DiscriminatorConfig,
    discriminator_logistic_loss,
    generator_adversarial_loss,
    r1_penalty,
)
from triplanenet.losses.discriminator import EqualizedConv2d, minibatch_stddev

KEYS_TSV = "stylegan2_ada_discriminator_512.tsv"


@pytest.fixture(scope="module")
def fixture() -> dict:
    return load_fixture("discriminator_seed1.pt")


@pytest.fixture(scope="module")
def official_discriminator() -> Discriminator:
    discriminator = Discriminator(DiscriminatorConfig.official_v2())
    fill_module(discriminator, seed=1, prefix="discriminator.")
    return discriminator.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def official_logits(official_discriminator: Discriminator, fixture: dict) -> torch.Tensor:
    with torch.no_grad():
        return official_discriminator(fixture["image"])


def _tiny(seed: int = 0) -> Discriminator:
    torch.manual_seed(seed)
    return Discriminator(DiscriminatorConfig.tiny())


# ---------------------------------------------------------------------------------------------------------- layout
def test_state_dict_matches_official_keys_and_shapes(official_discriminator: Discriminator) -> None:
    expected = read_keys_tsv(KEYS_TSV)
    actual = {key: tuple(value.shape) for key, value in official_discriminator.state_dict().items()}
    assert actual == expected
    assert not any("mapping" in key for key in expected)  # c_dim 0: no label mapping network
    assert sum(p.numel() for p in official_discriminator.parameters()) == 28_982_849


def test_config_from_fixture_init_kwargs(fixture: dict) -> None:
    config = DiscriminatorConfig.from_official_kwargs(fixture["meta"]["init_kwargs"])
    assert config == DiscriminatorConfig.official_v2()
    assert config.conv_clamp == 256 and config.mbstd_group_size is None and config.mbstd_num_channels == 1
    with pytest.raises(ConfigError, match="c_dim"):
        DiscriminatorConfig.from_official_kwargs({**fixture["meta"]["init_kwargs"], "c_dim": 25})


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="power of two"):
        DiscriminatorConfig(img_resolution=96)
    with pytest.raises(ConfigError, match="resnet"):
        DiscriminatorConfig(architecture="skip")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mbstd_group_size"):
        DiscriminatorConfig(mbstd_group_size=0)
    with pytest.raises(ConfigError, match="too small"):
        DiscriminatorConfig(img_resolution=64, channel_base=32)


def test_tiny_preset_is_small() -> None:
    discriminator = DiscriminatorConfig.tiny().build()
    assert [name for name, _ in discriminator.named_children()] == ["b64", "b32", "b16", "b8", "b4"]
    assert sum(p.numel() for p in discriminator.parameters()) < 200_000


# ---------------------------------------------------------------------------------------------------------- parity
def test_logits_match_fixture(official_logits: torch.Tensor, fixture: dict) -> None:
    delta = (official_logits - fixture["logits"]).abs().max().item()
    print(f"discriminator logits max |delta| vs fixture: {delta:.3g}")
    assert official_logits.shape == (1, 1)
    torch.testing.assert_close(official_logits, fixture["logits"], atol=1e-4, rtol=1e-4)


def test_generator_loss_matches_fixture(official_logits: torch.Tensor, fixture: dict) -> None:
    torch.testing.assert_close(
        generator_adversarial_loss(official_logits), fixture["softplus_neg_fake"], atol=1e-5, rtol=1e-5
    )


# ---------------------------------------------------------------------------------------------------------- ops
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_conv2d_down_equals_pad_conv_filter_subsample(kernel_size: int) -> None:
    # Reference order (all padding first, then full-resolution conv, then FIR filter, then keep every 2nd pixel).
    x = torch.randn(2, 5, 12, 12, dtype=torch.float64)
    weight = torch.randn(7, 5, kernel_size, kernel_size, dtype=torch.float64)
    f = setup_filter().double()
    pad = kernel_size // 2 + 1
    y = F.conv2d(F.pad(x, [pad] * 4), weight)
    y = F.conv2d(y, f[None, None].repeat(7, 1, 1, 1), groups=7)[:, :, ::2, ::2]
    torch.testing.assert_close(conv2d_down(x, weight, f), y)
    assert y.shape == (2, 7, 6, 6)


def test_downsample2d_equals_filter_then_subsample() -> None:
    x = torch.randn(1, 3, 10, 10, dtype=torch.float64)
    f = setup_filter().double()
    expected = upfirdn2d(x, f, padding=(1, 1, 1, 1))[:, :, ::2, ::2]
    torch.testing.assert_close(downsample2d(x, f), expected)
    interior = downsample2d(torch.ones(1, 1, 8, 8), setup_filter())[:, :, 1:-1, 1:-1]
    torch.testing.assert_close(interior, torch.ones(1, 1, 2, 2))  # DC gain 1 away from the zero-padded border


def test_conv_clamp_scales_with_gain() -> None:
    conv = EqualizedConv2d(4, 4, 3, down=True, conv_clamp=256.0)
    with torch.no_grad():
        conv.weight.fill_(1000.0)
        y = conv(torch.ones(1, 4, 8, 8), gain=math.sqrt(0.5))
    assert y.max().item() == pytest.approx(256.0 * math.sqrt(0.5))
    no_clamp = EqualizedConv2d(4, 4, 3, bias=False, activation="linear")
    with torch.no_grad():
        no_clamp.weight.fill_(1000.0)
        assert no_clamp(torch.ones(1, 4, 8, 8)).max().item() > 256.0


def test_minibatch_stddev_by_hand() -> None:
    x = torch.randn(4, 6, 2, 2, dtype=torch.float64)
    out = minibatch_stddev(x, group_size=None, num_channels=1)
    std = (x.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    assert out.shape == (4, 7, 2, 2)
    torch.testing.assert_close(out[:, :6], x)
    torch.testing.assert_close(out[:, 6], std.expand(4, 2, 2))
    # Groups of two take every second sample: {0, 2} and {1, 3}; two feature channels split the 6 channels 3 + 3.
    grouped = minibatch_stddev(x, group_size=2, num_channels=2)
    for members in ([0, 2], [1, 3]):
        sub = x[members]
        for slot, chans in enumerate((slice(0, 3), slice(3, 6))):
            expected = (sub[:, chans].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            torch.testing.assert_close(grouped[members, 6 + slot], expected.expand(2, 2, 2))
    single = minibatch_stddev(x[:1], group_size=None)
    torch.testing.assert_close(single[:, 6], torch.full((1, 2, 2), 1e-4, dtype=torch.float64))
    with pytest.raises(InputImageError, match="divisible by 2"):
        minibatch_stddev(x[:3], group_size=2)


def test_forward_rejects_wrong_shapes() -> None:
    discriminator = _tiny()
    with pytest.raises(InputImageError, match=r"\(B, 3, 64, 64\)"):
        discriminator(torch.zeros(1, 3, 32, 32))
    with pytest.raises(InputImageError):
        discriminator(torch.zeros(3, 64, 64))
    grouped = Discriminator(dataclasses.replace(DiscriminatorConfig.tiny(), mbstd_group_size=4))
    with pytest.raises(InputImageError, match="divisible by 4"):
        grouped(torch.zeros(6, 3, 64, 64))
    assert grouped(torch.zeros(3, 3, 64, 64)).shape == (3, 1)  # min(4, batch) = 3


# ---------------------------------------------------------------------------------------------------------- losses
def test_losses_by_hand() -> None:
    real = torch.tensor([[0.5], [-1.0], [2.0]])
    fake = torch.tensor([[-0.3], [1.5]])
    softplus = lambda t: torch.log1p(torch.exp(t))  # noqa: E731
    torch.testing.assert_close(generator_adversarial_loss(fake), softplus(-fake).mean())
    expected = (softplus(-real).mean() + softplus(fake).mean()) / 2
    torch.testing.assert_close(discriminator_logistic_loss(real, fake), expected)
    # log(2) for zero logits: the critic is undecided.
    zeros = torch.zeros(4, 1)
    assert discriminator_logistic_loss(zeros, zeros).item() == pytest.approx(math.log(2))
    with pytest.raises(InputImageError, match=r"\(B, 1\)"):
        generator_adversarial_loss(torch.zeros(4))
    with pytest.raises(InputImageError):
        discriminator_logistic_loss(zeros, torch.zeros(4, 2))


def test_r1_penalty_matches_autograd_and_finite_differences() -> None:
    discriminator = _tiny().double()
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64).clamp(-1, 1)
    penalty = r1_penalty(discriminator, images)

    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x).sum(), x)
    torch.testing.assert_close(penalty, (grad**2).sum(dim=[1, 2, 3]).mean())
    # The input gradient itself, against central differences along random unit directions. The network is piecewise
    # linear/smooth (leaky ReLU kinks), so the step must be small enough that no pre-activation changes sign.
    eps = 1e-6
    for _ in range(2):
        direction = torch.randn_like(images)
        direction = direction / direction.norm()
        with torch.no_grad():
            plus = discriminator(images + eps * direction).sum()
            minus = discriminator(images - eps * direction).sum()
        torch.testing.assert_close((plus - minus) / (2 * eps), (grad * direction).sum(), rtol=1e-5, atol=1e-9)

    # create_graph: the penalty is differentiable w.r.t. the weights (checked on one conv weight entry).
    weight = discriminator.b8.conv0.weight
    (analytic,) = torch.autograd.grad(penalty, weight)
    with torch.no_grad():
        original = weight[0, 0, 1, 1].item()
        weight[0, 0, 1, 1] = original + eps
        high = r1_penalty(discriminator, images, create_graph=False)
        weight[0, 0, 1, 1] = original - eps
        low = r1_penalty(discriminator, images, create_graph=False)
        weight[0, 0, 1, 1] = original
    torch.testing.assert_close((high - low) / (2 * eps), analytic[0, 0, 1, 1], rtol=1e-4, atol=1e-9)
    assert images.grad is None and not images.requires_grad


def test_r1_penalty_works_under_no_grad() -> None:
    discriminator = _tiny()
    with torch.no_grad():
        penalty = r1_penalty(discriminator, torch.zeros(2, 3, 64, 64), create_graph=False)
    assert penalty.ndim == 0 and torch.isfinite(penalty) and penalty.item() > 0


def test_training_step_updates_discriminator_and_generator_side() -> None:
    discriminator = _tiny()
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    real = torch.rand(2, 3, 64, 64) * 2 - 1
    fake = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)

    # Generator step: gradients reach the fake images.
    generator_adversarial_loss(discriminator(fake)).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    optimizer.zero_grad()

    # Critic step plus lazy R1 (official defaults gamma 10, every 16 steps).
    before = {k: v.clone() for k, v in discriminator.state_dict().items()}
    loss = discriminator_logistic_loss(discriminator(real), discriminator(fake.detach()))
    loss = loss + 10.0 / 2 * 16 * r1_penalty(discriminator, real)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in discriminator.parameters())
    optimizer.step()
    changed = [k for k, v in discriminator.state_dict().items() if not torch.equal(v, before[k])]
    assert "b64.fromrgb.weight" in changed and "b4.out.weight" in changed
    assert not any(k.endswith("resample_filter") for k in changed)


# ---------------------------------------------------------------------------------------------------------- loading
def test_load_discriminator_round_trip(tmp_path: Path) -> None:
    config = DiscriminatorConfig.tiny()
    source = _tiny(seed=3)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    plain = tmp_path / "discriminator.pth"
    torch.save(source.state_dict(), plain)
    wrapped = tmp_path / "iteration_1000.pt"
    torch.save({"state_dict": {}, "opts": {"d_r1_gamma": 10.0}, "dis_state_dict": source.state_dict()}, wrapped)
    with torch.no_grad():
        expected = source(images)
        for file in (plain, wrapped):
            loaded = load_discriminator(file, config)
            assert not any(p.requires_grad for p in loaded.parameters())
            torch.testing.assert_close(loaded(images), expected, rtol=0, atol=0)


def test_load_discriminator_errors(tmp_path: Path) -> None:
    config = DiscriminatorConfig.tiny()
    state = _tiny().state_dict()

    with pytest.raises(CheckpointError, match="not found"):
        load_discriminator(tmp_path / "absent.pth", config)

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(CheckpointError):
        load_discriminator(corrupt, config)

    extra = tmp_path / "extra.pth"
    torch.save({**state, "mapping.fc0.weight": torch.zeros(2, 2)}, extra)
    with pytest.raises(CheckpointError, match=r"1 unexpected: mapping\.fc0\.weight"):
        load_discriminator(extra, config)

    # A 64² file loaded as the 512² preset: missing blocks and wrong shapes, reported in one line.
    small = tmp_path / "small.pth"
    torch.save(state, small)
    with pytest.raises(CheckpointError, match=r"missing: b512\..*shape \(file vs model\)") as info:
        load_discriminator(small)
    assert "\n" not in str(info.value)

    no_weights = tmp_path / "no_weights.pth"
    torch.save({"step": 3, "opts": {}}, no_weights)
    with pytest.raises(CheckpointError, match="no discriminator state dict"):
        load_discriminator(no_weights, config)
