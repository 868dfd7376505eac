"""unsup3d ``ConfNet``: the pretrained per-pixel uncertainty (sigma) predictor used by TriPlaneNet's mirror loss.

Architecture (Wu et al., unsup3d; exact state-dict keys, ``nf`` = 64, ``zdim`` = 128 for the released CelebA
checkpoint ``pretrained_celeba/checkpoint030.pth``, entry ``netC``). All convolutions are bias-free; "GN(g)" is
GroupNorm with ``g`` groups, "LReLU" LeakyReLU(0.2)::

    network.0   Conv 4x4 s2 p1  cin -> nf          64 -> 32     network.1 GN(16)     2 LReLU
    network.3   Conv 4x4 s2 p1  nf -> 2nf          32 -> 16     network.4 GN(32)     5 LReLU
    network.6   Conv 4x4 s2 p1  2nf -> 4nf         16 -> 8      network.7 GN(64)     8 LReLU
    network.9   Conv 4x4 s2 p1  4nf -> 8nf          8 -> 4                          10 LReLU
    network.11  Conv 4x4 s1 p0  8nf -> zdim         4 -> 1                          12 ReLU
    network.13  ConvT 4x4 s1 p0 zdim -> 8nf         1 -> 4                          14 ReLU
    network.15  ConvT 4x4 s2 p1 8nf -> 4nf          4 -> 8      network.16 GN(64)   17 ReLU
    network.18  ConvT 4x4 s2 p1 4nf -> 2nf          8 -> 16     network.19 GN(32)   20 ReLU
    out_net1.0  ConvT 4x4 s2 p1 2nf -> nf          16 -> 32     out_net1.1 GN(16)    2 ReLU
    out_net1.3  ConvT 4x4 s2 p1 nf -> nf           32 -> 64     out_net1.4 GN(16)    5 ReLU
    out_net1.6  Conv 5x5 s1 p2  nf -> cout         64           7 Softplus   -> conf_sigma_l1   (B, cout, 64, 64)
    out_net2.0  Conv 3x3 s1 p1  2nf -> cout        16           1 Softplus   -> conf_sigma_percl (B, cout, 16, 16)

(unsup3d hard-codes 2 output channels and ignores ``cout``; here ``cout`` sets them, 2 by default.) Input: a
64x64 image in [-1, 1].

Channels of ``conf_sigma_l1``: in unsup3d, channel 0 is sigma for the photometric loss of the *canonical*
reconstruction and channel 1 sigma for the loss of the *horizontally flipped* (symmetric) reconstruction. TriPlaneNet
(``dataset_preprocessing/ffhq/conf_map.py``) keeps **channel 1** -- the uncertainty of the symmetry assumption --
computed on the *unmirrored* image, upsamples it to 256x256 and saves it as ``conf_map/<name>.npy`` (float32,
(256, 256), values > 0; larger = less trust). The v2 dataset mirrors the stored map horizontally when it loads it
so that it lines up with ``x_m`` (:func:`mirror_sigma`). ``conf_sigma_percl`` is unused.

Pre-processing (:meth:`ConfNet.predict_sigma`, as in ``conf_map.py``): image in [0, 1] -> bilinear resize to
256x256 -> bilinear resize to 64x64 (both ``align_corners=False``, no antialiasing) -> ``* 2 - 1``.

Origin: the architecture is unsup3d's ``ConfNet`` (Shangzhe Wu, Christian Rupprecht, Andrea Vedaldi, "Unsupervised
Learning of Probably Symmetric Deformable 3D Objects from Images in the Wild", CVPR 2020; code ``elliottwu/unsup3d``,
MIT licence). The layer list above and the state-dict keys are what loading its checkpoint requires; the code here is
our own. No unsup3d weights are shipped: the bundled ``assets/default/confnet.safetensors`` was trained by this
project (``scripts/train_default_model.py sigma``), and the CelebA checkpoint is read only from a user's own file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from triplanenet.errors import CheckpointError, ConfigError, InputImageError

CONFNET_INPUT_SIZE = 64
CONF_MAP_SIZE = 256
FLIP_SIGMA_CHANNEL = 1
"""``conf_sigma_l1`` channel TriPlaneNet uses: sigma of the flipped (symmetric) reconstruction."""


@dataclass(frozen=True)
class ConfNetConfig:
    """Sizes of :class:`ConfNet`; the released unsup3d CelebA model is the default (3, 2, 64, 128)."""

    cin: int = 3
    """Input channels."""
    cout: int = 2
    """Output channels of both heads (unsup3d always uses 2)."""
    nf: int = 64
    """Base width; must be a multiple of 16 (GroupNorm with 16 groups on ``nf`` channels)."""
    zdim: int = 128
    """Bottleneck width."""

    def __post_init__(self) -> None:
        if min(self.cin, self.cout, self.nf, self.zdim) <= 0:
            raise ConfigError(f"ConfNet sizes must be positive, got {self}")
        if self.nf % 16 != 0:
            raise ConfigError(f"ConfNet nf must be a multiple of 16 (GroupNorm groups), got {self.nf}")


class ConfNet(nn.Module):
    """unsup3d uncertainty network (see the module docstring for the exact layer list and keys).

    ``forward(x)``: x (B, cin, 64, 64) in [-1, 1] -> ``(conf_sigma_l1 (B, cout, 64, 64),
    conf_sigma_percl (B, cout, 16, 16))``, both > 0 (Softplus).
    """

    def __init__(self, cin: int = 3, cout: int = 2, nf: int = 64, zdim: int = 128) -> None:
        super().__init__()
        self.cfg = ConfNetConfig(cin=cin, cout=cout, nf=nf, zdim=zdim)

        def lrelu() -> nn.Module:
            return nn.LeakyReLU(0.2)

        self.network = nn.Sequential(
            nn.Conv2d(cin, nf, 4, stride=2, padding=1, bias=False),
            nn.GroupNorm(16, nf),
            lrelu(),
            nn.Conv2d(nf, nf * 2, 4, stride=2, padding=1, bias=False),
            nn.GroupNorm(32, nf * 2),
            lrelu(),
            nn.Conv2d(nf * 2, nf * 4, 4, stride=2, padding=1, bias=False),
            nn.GroupNorm(64, nf * 4),
            lrelu(),
            nn.Conv2d(nf * 4, nf * 8, 4, stride=2, padding=1, bias=False),
            lrelu(),
            nn.Conv2d(nf * 8, zdim, 4, stride=1, padding=0, bias=False),
            nn.ReLU(),
            nn.ConvTranspose2d(zdim, nf * 8, 4, stride=1, padding=0, bias=False),
            nn.ReLU(),
            nn.ConvTranspose2d(nf * 8, nf * 4, 4, stride=2, padding=1, bias=False),
            nn.GroupNorm(64, nf * 4),
            nn.ReLU(),
            nn.ConvTranspose2d(nf * 4, nf * 2, 4, stride=2, padding=1, bias=False),
            nn.GroupNorm(32, nf * 2),
            nn.ReLU(),
        )
        self.out_net1 = nn.Sequential(
            nn.ConvTranspose2d(nf * 2, nf, 4, stride=2, padding=1, bias=False),
            nn.GroupNorm(16, nf),
            nn.ReLU(),
            nn.ConvTranspose2d(nf, nf, 4, stride=2, padding=1, bias=False),
            nn.GroupNorm(16, nf),
            nn.ReLU(),
            nn.Conv2d(nf, cout, 5, stride=1, padding=2, bias=False),
            nn.Softplus(),
        )
        self.out_net2 = nn.Sequential(
            nn.Conv2d(nf * 2, cout, 3, stride=1, padding=1, bias=False),
            nn.Softplus(),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = CONFNET_INPUT_SIZE
        if x.ndim != 4 or x.shape[1] != self.cfg.cin or tuple(x.shape[-2:]) != (size, size):
            raise InputImageError(
                f"ConfNet expects (B, {self.cfg.cin}, {size}, {size}) images in [-1, 1], got {tuple(x.shape)}; "
                "use predict_sigma for other sizes"
            )
        h = self.network(x)
        return self.out_net1(h), self.out_net2(h)

    def predict_sigma(
        self, images: torch.Tensor, channel: int = FLIP_SIGMA_CHANNEL, output_size: int = CONF_MAP_SIZE
    ) -> torch.Tensor:
        """TriPlaneNet's confidence map: (B, 3, H, W) in [-1, 1], any size -> sigma (B, 1, output_size, output_size).

        Official pre-processing (resize to 256 then 64, bilinear), ``conf_sigma_l1[:, channel]`` (default 1, the
        flipped-reconstruction sigma), bilinear upsampling to ``output_size``. Runs without gradient. The result is
        aligned with ``images`` (what ``conf_map/<name>.npy`` stores); use :func:`mirror_sigma` for ``x_m``.
        """
        if images.ndim != 4 or images.shape[1] != self.cfg.cin:
            raise InputImageError(
                f"predict_sigma expects (B, {self.cfg.cin}, H, W) images in [-1, 1], got {tuple(images.shape)}"
            )
        if not 0 <= channel < self.cfg.cout:
            raise ConfigError(f"sigma channel must be in [0, {self.cfg.cout}), got {channel}")
        param = next(self.parameters())
        with torch.no_grad():
            unit = (images.to(param.dtype) + 1.0) / 2.0  # official code resizes the [0, 1] image
            unit = F.interpolate(unit, size=(CONF_MAP_SIZE, CONF_MAP_SIZE), mode="bilinear", align_corners=False)
            unit = F.interpolate(
                unit, size=(CONFNET_INPUT_SIZE, CONFNET_INPUT_SIZE), mode="bilinear", align_corners=False
            )
            sigma_l1, _ = self(unit * 2.0 - 1.0)
            sigma = sigma_l1[:, channel : channel + 1]
            return F.interpolate(sigma, size=(output_size, output_size), mode="bilinear", align_corners=False)


def mirror_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """Flip a sigma map horizontally (last dim), as the v2 dataset does to align a stored map with ``x_m``."""
    return torch.flip(sigma, dims=(-1,))


def load_confnet(
    path: str | os.PathLike[str], nf: int = 64, zdim: int = 128, device: str | torch.device = "cpu"
) -> ConfNet:
    """Build a :class:`ConfNet` and load an unsup3d checkpoint (``ckpt['netC']``) or a bare ConfNet state dict.

    Loading uses ``weights_only`` (no code from the file runs); keys and shapes must match exactly. Returns the
    network in eval mode with ``requires_grad=False``.

    Raises:
        CheckpointError: missing/unsafe file, no ``netC`` entry, or mismatching keys/shapes.
    """
    from triplanenet.io.checkpoints import safe_torch_load

    file = Path(path)
    if not file.is_file():
        raise CheckpointError(
            f"ConfNet checkpoint {file} not found; pass unsup3d's pretrained_celeba/checkpoint030.pth"
        )
    obj: Any = safe_torch_load(file)
    if isinstance(obj, dict) and "netC" in obj:
        obj = obj["netC"]
    elif isinstance(obj, dict) and not any(str(k).startswith("network.") for k in obj):
        keys = ", ".join(sorted(str(k) for k in obj)[:6]) or "none"
        raise CheckpointError(f"{file}: has no 'netC' (ConfNet) entry (keys: {keys}); pass an unsup3d checkpoint")
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{file}: 'netC' is not a state dict of tensors")
    state = {str(k): v for k, v in obj.items()}
    first = state.get("network.0.weight")
    if first is None or first.ndim != 4:
        raise CheckpointError(f"{file}: the ConfNet weights lack network.0.weight; not an unsup3d ConfNet")
    net = ConfNet(cin=int(first.shape[1]), cout=_cout(state), nf=nf, zdim=zdim)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        what = (missing or unexpected or shapes)[0]
        raise CheckpointError(
            f"{file}: ConfNet weights do not match nf={nf}, zdim={zdim} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(shapes)} wrong shape, e.g. {what}); check nf/zdim"
        )
    net.load_state_dict(state, strict=True)
    return net.to(device).eval().requires_grad_(False)


def _cout(state: dict[str, torch.Tensor]) -> int:
    last = state.get("out_net1.6.weight")
    return int(last.shape[0]) if last is not None and last.ndim == 4 else 2


def save_conf_map(path: str | os.PathLike[str], sigma: torch.Tensor | np.ndarray) -> Path:
    """Write one map as ``.npy`` in the official layout: float32, shape (H, W) (256x256), atomically.

    ``sigma`` may be (H, W), (1, H, W) or (1, 1, H, W).
    """
    from triplanenet.io.atomic import OutputWriteError, atomic_path

    array = sigma.detach().cpu().numpy() if isinstance(sigma, torch.Tensor) else np.asarray(sigma)
    array = np.ascontiguousarray(array.astype(np.float32, copy=False).squeeze())
    if array.ndim != 2:
        raise InputImageError(f"a confidence map must be 2-D after squeezing, got shape {array.shape}")
    file = Path(path)
    try:
        with atomic_path(file, suffix=".npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    except OutputWriteError as exc:
        raise CheckpointError(f"{exc}; check disk space/permissions") from None
    return file


def load_conf_map(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a ``conf_map/<name>.npy`` file (float32 (H, W), no pickles), as stored (not mirrored)."""
    file = Path(path)
    try:
        array = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputImageError(f"{file}: cannot read the confidence map ({exc}); recompute it") from None
    if array.ndim != 2 or array.dtype.kind != "f":
        raise InputImageError(f"{file}: expected a 2-D float confidence map, got {array.dtype} {array.shape}")
    return array.astype(np.float32, copy=False)
