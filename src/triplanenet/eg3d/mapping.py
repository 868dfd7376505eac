"""Mapping network: (z, c) -> w, broadcast to ``num_ws`` copies, with truncation toward ``w_avg``."""

from __future__ import annotations

import torch
from torch import nn

from triplanenet.eg3d.layers import FullyConnectedLayer


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row of (B, D) to unit root-mean-square."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """EG3D/StyleGAN2 mapping network.

    Keys: ``embed.*`` (c_dim -> w_dim, only when c_dim > 0), ``fc{i}.*``, buffer ``w_avg`` (w_dim).
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int,
        num_layers: int = 2,
        lr_multiplier: float = 0.01,
        w_avg_beta: float = 0.998,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, w_dim)
        in_features = (z_dim if z_dim > 0 else 0) + (w_dim if c_dim > 0 else 0)
        for index in range(num_layers):
            layer = FullyConnectedLayer(in_features, w_dim, activation="lrelu", lr_multiplier=lr_multiplier)
            setattr(self, f"fc{index}", layer)
            in_features = w_dim
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """Map z (B, z_dim) and camera label c (B, c_dim) to ws (B, num_ws, w_dim)."""
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for index in range(self.num_layers):
            x = getattr(self, f"fc{index}")(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws = ws.clone()
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws
