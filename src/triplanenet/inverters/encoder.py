"""Feed-forward inversion with a TriPlaneNet model (one forward pass per batch)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from triplanenet.eg3d.camera import validate_label
from triplanenet.inversion import Inversion, prepare_image
from triplanenet.model import TriPlaneNet


class TriPlaneNetInverter:
    """Invert aligned face crops with TriPlaneNet.

    Args:
        model: a loaded :class:`TriPlaneNet` (moved to the device you want).
        cttr: cascaded test-time refinement (second pass of the tri-plane encoder on the refined residual).
        first_branch_only: keep only the pSp codes (``w+-pred``), no tri-plane offsets.
        deterministic: deterministic ray sampling (reproducible results).
    """

    def __init__(
        self,
        model: TriPlaneNet,
        cttr: bool = False,
        first_branch_only: bool = False,
        deterministic: bool = True,
    ) -> None:
        self.model = model.eval()
        self.cttr = cttr
        self.first_branch_only = first_branch_only
        self.deterministic = deterministic
        if first_branch_only:
            self.name = "w+-pred"
        else:
            self.name = "triplanenet+cttr" if cttr else "triplanenet"

    @property
    def device(self) -> torch.device:
        return self.model.latent_avg.device

    @torch.no_grad()
    def invert_batch(self, images: Sequence[torch.Tensor] | torch.Tensor, cameras: torch.Tensor) -> list[Inversion]:
        """images: B tensors (3, H, W) in [-1, 1] (resized to the encoder resolution); cameras (B, 25)."""
        size = self.model.config.input_resolution
        x = torch.stack([prepare_image(image, size) for image in images]).to(self.device)
        labels = validate_label(cameras).to(self.device)
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {labels.shape[0]} cameras")
        generator = self.model.decoder
        if self.first_branch_only:
            ws = self.model.encode_ws(x)
            return [Inversion(generator, ws[i : i + 1], labels[i : i + 1], None, self.name) for i in range(x.shape[0])]
        out = self.model(x, labels, cttr=self.cttr, deterministic=self.deterministic)
        # Each Inversion recomputes its planes from (ws, offsets) at batch size 1, so that a saved and re-loaded
        # inversion renders bit-for-bit the same images as the original (batched convs round differently).
        return [
            Inversion(generator, out.ws[i : i + 1], labels[i : i + 1], out.offsets[i : i + 1], self.name)
            for i in range(x.shape[0])
        ]

    def invert(self, image: torch.Tensor, camera: torch.Tensor) -> Inversion:
        """One image (3, H, W) in [-1, 1] and its camera (25,) or (1, 25)."""
        return self.invert_batch([image], validate_label(camera))[0]
