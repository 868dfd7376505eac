"""StyleGAN2 building blocks with EG3D's parameter layout and numerics.

Weights are stored raw and scaled at run time ("equalized learning rate"), exactly as in the official checkpoints,
so state dicts load by name without conversion.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def setup_filter(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)) -> torch.Tensor:
    """Separable low-pass FIR filter as a normalised 2-D kernel (sum 1). ``[1,3,3,1]`` gives the 4x4 EG3D filter."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str = "linear",
    gain: float = 1.0,
    clamp: float | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """``clamp(act(x + bias) * gain)``; bias broadcast over dim 1. ``activation`` is ``linear`` or ``lrelu``.

    With ``inplace=True`` the result overwrites ``x`` (4x less memory traffic); callers use it only for fresh
    tensors that autograd does not need.
    """
    if inplace:
        if bias is not None:
            x.add_(bias.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2)))
        if activation == "lrelu":
            F.leaky_relu_(x, LRELU_SLOPE)
        elif activation != "linear":
            raise ValueError(f"unknown activation {activation!r}")
        if gain != 1:
            x.mul_(gain)
        return x.clamp_(-clamp, clamp) if clamp is not None else x
    if bias is not None:
        x = x + bias.to(x.dtype).reshape([1, -1] + [1] * (x.ndim - 2))
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
    elif activation != "linear":
        raise ValueError(f"unknown activation {activation!r}")
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def can_modify_inplace(x: torch.Tensor) -> bool:
    """True when overwriting ``x`` cannot break autograd (no grad mode, or x needs no gradient)."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by zero insertion, pad (left, right, top, bottom; may be negative), then FIR-filter.

    Args:
        x: (B, C, H, W).
        f: (kh, kw) filter; it is applied as a true convolution (flipped), which for the symmetric EG3D filter is the
            same as correlation.
    """
    channels = x.shape[1]
    if up > 1:
        # Zero insertion: every input pixel lands on the top-left of an up x up cell of zeros.
        spread = x.new_zeros(x.shape[0], channels, x.shape[2] * up, x.shape[3] * up)
        spread[:, :, ::up, ::up] = x
        x = spread
    pad_left, pad_right, pad_top, pad_bottom = padding
    kernel = (f * gain).flip([0, 1]).to(x.dtype)
    kernel = kernel[None, None].repeat(channels, 1, 1, 1)
    if pad_left == pad_right == pad_top == pad_bottom >= 0:
        # Zero padding inside the convolution avoids materialising a padded copy.
        return F.conv2d(x, kernel, padding=pad_left, groups=channels)
    # F.pad grows the image by a positive amount and crops it by a negative one, side by side.
    return F.conv2d(F.pad(x, [pad_left, pad_right, pad_top, pad_bottom]), kernel, groups=channels)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x upsampling with a 4-tap low-pass filter: (B, C, H, W) -> (B, C, 2H, 2W), DC gain preserved."""
    taps = f.shape[-1]
    pad0 = (taps + 1) // 2
    pad1 = (taps - 2) // 2
    return upfirdn2d(x, f, up=2, padding=(pad0, pad1, pad0, pad1), gain=4.0)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR downsampling: (B, C, H, W) -> (B, C, H/2, W/2), DC gain preserved (``f`` sums to 1).

    Equivalent to filtering ``x`` padded by ``(taps - 1) // 2`` before / ``(taps - 2) // 2`` after and keeping every
    second pixel; computed as one strided depthwise convolution so the discarded pixels are never evaluated.
    """
    taps = f.shape[-1]
    pad_before = (taps - 1) // 2
    pad_after = (taps - 2) // 2
    channels = x.shape[1]
    kernel = f.flip([0, 1]).to(x.dtype)[None, None].repeat(channels, 1, 1, 1)
    if pad_before != pad_after:
        x = F.pad(x, [pad_before, pad_after, pad_before, pad_after])
        return F.conv2d(x, kernel, stride=2, groups=channels)
    return F.conv2d(x, kernel, stride=2, padding=pad_before, groups=channels)


def conv2d_down(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Anti-aliased stride-2 convolution ("same" padding): (B, I, H, W) x (O, I, k, k) -> (B, O, H/2, W/2).

    A k x k kernel is preceded by the FIR low-pass ``f`` (padding k//2 plus the filter's own padding) and then run
    with stride 2 and no padding; a 1x1 kernel simply convolves the :func:`downsample2d` result.
    ``weight`` is used as given (apply equalized-LR gains before calling).
    """
    kernel_size = weight.shape[-1]
    weight = weight.to(x.dtype)
    if kernel_size == 1:
        return F.conv2d(downsample2d(x, f), weight)
    taps = f.shape[-1]
    pad_before = kernel_size // 2 + (taps - 1) // 2
    pad_after = kernel_size // 2 + (taps - 2) // 2
    x = upfirdn2d(x, f, padding=(pad_before, pad_after, pad_before, pad_after))
    return F.conv2d(x, weight, stride=2)


def _bound_for_half(weight: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale raw weights and styles before an fp16 modulated convolution.

    Squaring and summing a modulated filter in half precision can pass fp16's largest value (65504). Dividing every
    output filter by its largest magnitude (and by sqrt of its fan-in) and the styles of each sample by theirs keeps
    those sums small. Each rescaling multiplies a whole output filter by one positive number, which demodulation
    divides out again, so only rounding changes. The arithmetic is EG3D's, so fp16 results round as the official
    ones do.
    """
    fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
    largest_weight = weight.abs().amax(dim=[1, 2, 3], keepdim=True)
    weight = weight * (1 / math.sqrt(fan_in) / largest_weight)
    return weight, styles / styles.abs().amax(dim=1, keepdim=True)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    resample_filter: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution, computed as one grouped convolution over the batch.

    Args:
        x: (B, I, H, W) input.
        weight: (O, I, k, k) raw weight.
        styles: (B, I) per-sample input-channel scales.
        demodulate: normalise each output filter to unit norm (per sample).
        up: 1, or 2 for a transposed-conv + FIR upsampling layer (output 2H).
        resample_filter: (4, 4) filter, required when ``up == 2``.
        noise: tensor broadcastable to the output, added after (de)modulation.

    Returns:
        (B, O, H*up, W*up).
    """
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    if x.dtype == torch.float16 and demodulate:
        weight, styles = _bound_for_half(weight, styles)
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_ch, 1, 1)  # (B, O, I, k, k)
    if demodulate:
        inv_filter_norm = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # (B, O): 1 / |modulated filter|
        w = w * inv_filter_norm.reshape(batch, out_ch, 1, 1, 1)
    w = w.to(x.dtype)
    x = x.reshape(1, batch * in_ch, *x.shape[2:])
    if up == 1:
        x = F.conv2d(x, w.reshape(batch * out_ch, in_ch, kh, kw), padding=kh // 2, groups=batch)
    elif up == 2:
        if resample_filter is None:
            raise ValueError("up=2 needs a resample_filter")
        # Transposed conv (stride 2, no padding) gives 2H+k-2; the FIR filter with padding brings it back to 2H.
        wt = w.transpose(1, 2).reshape(batch * in_ch, out_ch, kh, kw)
        x = F.conv_transpose2d(x, wt, stride=2, groups=batch)
        taps = resample_filter.shape[-1]
        pad0 = (taps + 1) // 2 + 1 - (kw - 1)
        pad1 = (taps - 2) // 2 + 1 - (kw - 2)
        x = upfirdn2d(x, resample_filter, padding=(pad0, pad1, pad0, pad1), gain=4.0)
    else:
        raise ValueError(f"unsupported up factor {up}")
    x = x.reshape(batch, out_ch, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


_ACTIVATION_GAINS = {"linear": 1.0, "lrelu": LRELU_GAIN}
"""Output gain that keeps the activation's output variance close to its input's."""


class FullyConnectedLayer(nn.Module):
    """Equalized-LR linear layer: effective weight ``weight * lr_multiplier / sqrt(in)``, bias ``bias * lr_multiplier``.

    Keys: ``weight`` (out, in), ``bias`` (out). Options after the two sizes are keyword-only.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias: bool = True,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATION_GAINS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(_ACTIVATION_GAINS)}")
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.lr_multiplier = lr_multiplier
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_scale = lr_multiplier / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight_t = (self.weight.to(x.dtype) * self.weight_scale).t()
        # Scaling by lr_multiplier is exact when it is 1, so the bias is always multiplied.
        bias = None if self.bias is None else self.bias.to(x.dtype) * self.lr_multiplier
        if bias is not None and self.activation == "linear":
            return torch.addmm(bias.unsqueeze(0), x, weight_t)  # the bias enters the fused matrix product
        return bias_act(x.matmul(weight_t), bias, self.activation, gain=_ACTIVATION_GAINS[self.activation])

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.activation}, lr_multiplier={self.lr_multiplier:g}"
