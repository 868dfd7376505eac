"""Function-preserving widening of the second branch (a trained U-Net grown to more channels, same output).

Every channel of the narrow network keeps its position (a prefix of the wider layer's channels, or two prefixes
where a decoder step concatenates ``[skip, upsampled]``). The added channels start from the wide module's own random
initialisation, except the weights that lead *from* an added channel *into* a kept one, which start at zero. So the
wide network computes exactly what the narrow one did (batch-norm statistics and squeeze-excitation gates are per
channel), while every added weight still receives a gradient: training continues from the narrow network's result
with the extra capacity (Net2Net's goal, Chen et al. 2016, reached with zero-initialised connections).
"""

from __future__ import annotations

import torch

from triplanenet.encoders.config import TriPlaneEncoderConfig
from triplanenet.encoders.triplane_unet import TriPlaneEncoder
from triplanenet.errors import ConfigError

_DECODER_STEPS = {"up1": 1, "up2": 2, "up3": 3, "up4": 4}
_CONCAT_NORM = "conv.double_conv.0"  # inside a decoder step: the batch norm over [skip, upsampled]
_CONCAT_CONV = "conv.double_conv.1"  # and the convolution that reads it


def _same_except_widths(narrow: TriPlaneEncoderConfig, wide: TriPlaneEncoderConfig) -> str | None:
    """Why ``wide`` is not a widening of ``narrow`` (None when it is)."""
    keep = ("version", "upsampling", "out_channels", "plane_channels", "double_prelu", "input_resolution")
    for name in keep:
        if getattr(narrow, name) != getattr(wide, name):
            return f"{name} differs ({getattr(narrow, name)} vs {getattr(wide, name)})"
    for name in ("units", "mode", "se_reduction", "input_channels"):
        if getattr(narrow.body, name) != getattr(wide.body, name):
            return f"body.{name} differs ({getattr(narrow.body, name)} vs {getattr(wide.body, name)})"
    pairs = [
        *zip(narrow.body.channels, wide.body.channels, strict=True),
        *zip(narrow.decoder_channels, wide.decoder_channels, strict=True),
        (narrow.head_channels, wide.head_channels),
    ]
    if any(w < n for n, w in pairs):
        return "a layer of the target is narrower than the trained one"
    return None


def _up_input_positions(narrow: TriPlaneEncoderConfig, wide: TriPlaneEncoderConfig, step: int) -> torch.Tensor:
    """Positions, in the wide ``up{step}`` input, of the narrow input channels: the skip part, then the upsampled."""
    skip = torch.arange(narrow.up_skip_channels[step - 1])
    upsampled = wide.up_skip_channels[step - 1] + torch.arange(narrow.up_upsampled_channels[step - 1])
    return torch.cat([skip, upsampled])


@torch.no_grad()
def _embed(wide: torch.Tensor, narrow: torch.Tensor, inputs: torch.Tensor | None) -> None:
    """Write ``narrow`` into ``wide``: output channels at the prefix, input channels (dim 1 of a weight) at
    ``inputs`` (None: the prefix); the kept outputs read nothing from the added inputs."""
    if narrow.ndim < 2:
        _embed_channels(wide, narrow, torch.arange(narrow.numel()))
        return
    outs = torch.arange(narrow.shape[0])
    ins = torch.arange(narrow.shape[1]) if inputs is None else inputs
    wide[: narrow.shape[0]] = 0.0
    wide[outs[:, None], ins[None, :]] = narrow.to(wide.dtype)


def widen_triplane_encoder(narrow: TriPlaneEncoder, config: TriPlaneEncoderConfig) -> TriPlaneEncoder:
    """A new :class:`TriPlaneEncoder` of ``config`` (wider body, decoder and head channels, e.g. from
    :meth:`TriPlaneEncoderConfig.widened`) whose output equals ``narrow``'s for every input, in eval and train mode.

    The added weights are drawn from the current torch random state (seed it for a reproducible result).

    Raises:
        ConfigError: ``config`` differs from ``narrow``'s in anything but widths, or is narrower somewhere.
    """
    why = _same_except_widths(narrow.cfg, config)
    if why is not None:
        raise ConfigError(f"cannot widen the second branch to this config: {why}")
    wide = TriPlaneEncoder(config).to(next(narrow.parameters()).device)
    wide.train(narrow.training)
    wide_state = wide.state_dict()
    concat_inputs = {step: _up_input_positions(narrow.cfg, config, step) for step in range(1, 5)}
    for name, tensor in narrow.state_dict().items():
        module, _, leaf = name.rpartition(".")
        top, _, inner = module.partition(".")
        step = _DECODER_STEPS.get(top)
        if step is not None and inner == _CONCAT_NORM:
            _embed_channels(wide_state[name], tensor, concat_inputs[step])
        elif step is not None and inner == _CONCAT_CONV and leaf == "weight":
            _embed(wide_state[name], tensor, concat_inputs[step])
        else:
            _embed(wide_state[name], tensor, None)
    wide.load_state_dict(wide_state)
    return wide


@torch.no_grad()
def _embed_channels(wide: torch.Tensor, narrow: torch.Tensor, positions: torch.Tensor) -> None:
    """Per-channel tensors (batch-norm parameters and statistics) at ``positions``; the step counter as it is."""
    if narrow.ndim == 0:
        wide.copy_(narrow)
    else:
        wide[positions] = narrow.to(wide.dtype)
