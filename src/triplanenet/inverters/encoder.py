"""Feed-forward inversion with a TriPlaneNet model (one forward pass per batch)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from triplanenet.eg3d.camera import validate_label
from triplanenet.inversion import Inversion, prepare_image
from triplanenet.model import TriPlaneNet
from triplanenet.perf import FastRunner, InferenceSettings, apply_fast_mode, fast_context


@dataclass
class RenderedBatch:
    """:meth:`TriPlaneNetInverter.invert_and_render`'s result: the inversions and what the forward pass rendered.

    Attributes:
        inversions: one :class:`Inversion` per image (their tri-planes are the ones below, not recomputed).
        ws: (B, num_ws, w_dim) codes.
        planes: (B, 3, C, R, R) final tri-planes (backbone + offsets).
        image: (B, 3, S, S) final render at the input cameras, S = the generator's output size; about [-1, 1].
        opacity: (B, 1, r, r) accumulated opacity of that render in [0, 1] (r = neural rendering resolution).
    """

    inversions: list[Inversion]
    ws: torch.Tensor
    planes: torch.Tensor
    image: torch.Tensor
    opacity: torch.Tensor


class TriPlaneNetInverter:
    """Invert aligned face crops with TriPlaneNet.

    Args:
        model: a loaded :class:`TriPlaneNet` (moved to the device you want).
        cttr: cascaded test-time refinement (second pass of the tri-plane encoder on the refined residual).
        first_branch_only: keep only the pSp codes (``w+-pred``), no tri-plane offsets.
        deterministic: deterministic ray sampling (reproducible results).
        fast: optional :class:`~triplanenet.perf.InferenceSettings` (autocast, compile, channels-last, CUDA graphs,
            threads). The model is prepared in place (see :func:`~triplanenet.perf.apply_fast_mode`). None (default)
            or ``InferenceSettings()`` give bit-identical results to the plain fp32 path.
        reuse_planes: hand each :class:`Inversion` the tri-planes already computed by the batched forward pass, so
            that its first render skips the StyleGAN2 backbone. Bit-identical for batch 1; for larger batches the
            batched convolutions may round differently (≈1e-6) from what a saved and re-loaded inversion recomputes,
            hence off by default.
    """

    def __init__(
        self,
        model: TriPlaneNet,
        cttr: bool = False,
        first_branch_only: bool = False,
        deterministic: bool = True,
        *,
        fast: InferenceSettings | None = None,
        reuse_planes: bool = False,
    ) -> None:
        self.model = model.eval()
        self.cttr = cttr
        self.first_branch_only = first_branch_only
        self.deterministic = deterministic
        self.fast = fast
        self.reuse_planes = reuse_planes
        if first_branch_only:
            self.name = "w+-pred"
        else:
            self.name = "triplanenet+cttr" if cttr else "triplanenet"
        self._runner: FastRunner | None = None
        if fast is not None:
            apply_fast_mode(model, fast)
            self._runner = FastRunner(self._forward, fast, self.device)

    @property
    def device(self) -> torch.device:
        return self.model.latent_avg.device

    def _forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(ws,) for the first branch alone, else (ws, offsets, final planes, final image, its opacity); a pure
        function of its inputs, as CUDA graphs need."""
        if self.first_branch_only:
            return (self.model.encode_ws(x),)
        out = self.model(x, labels, cttr=self.cttr, deterministic=self.deterministic)
        return out.ws, out.offsets, out.synthesis.planes, out.synthesis.image, out.synthesis.weight_sum

    def _run(
        self, images: Sequence[torch.Tensor] | torch.Tensor, cameras: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        size = self.model.config.input_resolution
        x = torch.stack([prepare_image(image, size) for image in images]).to(self.device)
        labels = validate_label(cameras).to(self.device)
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} images but {labels.shape[0]} cameras")
        if self._runner is not None:
            return labels, self._runner(x, labels)
        with torch.no_grad():
            return labels, self._forward(x, labels)

    def _inversions(self, labels: torch.Tensor, result: tuple[torch.Tensor, ...], reuse: bool) -> list[Inversion]:
        generator = self.model.decoder
        ws = result[0].float()
        if self.first_branch_only:
            return [Inversion(generator, ws[i : i + 1], labels[i : i + 1], None, self.name) for i in range(len(ws))]
        offsets, planes = result[1].float(), result[2].float()
        return [
            Inversion(
                generator,
                ws[i : i + 1],
                labels[i : i + 1],
                offsets[i : i + 1],
                self.name,
                _planes=planes[i : i + 1] if reuse else None,
            )
            for i in range(len(ws))
        ]

    def invert_batch(self, images: Sequence[torch.Tensor] | torch.Tensor, cameras: torch.Tensor) -> list[Inversion]:
        """images: B tensors (3, H, W) in [-1, 1] (resized to the encoder resolution); cameras (B, 25)."""
        labels, result = self._run(images, cameras)
        # By default each Inversion recomputes its planes from (ws, offsets) at batch size 1, so that a saved and
        # re-loaded inversion renders bit-for-bit the same images as the original (batched convs round differently).
        return self._inversions(labels, result, self.reuse_planes)

    def invert_and_render(self, images: Sequence[torch.Tensor] | torch.Tensor, cameras: torch.Tensor) -> RenderedBatch:
        """Like :meth:`invert_batch`, and also return what the forward pass already rendered at the input cameras,
        so a caller that shows it (video, web demo) does not render it again. The inversions keep the batch's
        tri-planes (no second backbone pass), so their renders match ``image``: bit for bit at batch 1, to convolution
        rounding (≈1e-6) in larger batches, where the super-resolution ran batched."""
        labels, result = self._run(images, cameras)
        inversions = self._inversions(labels, result, reuse=True)
        if self.first_branch_only:
            ws = result[0].float()
            with self.render_context():
                out = self.model.decoder.synthesis(ws, labels, deterministic=self.deterministic)
            return RenderedBatch(inversions, ws, out.planes.float(), out.image.float(), out.weight_sum.float())
        ws, _offsets, planes, image, opacity = (t.float() for t in result)
        return RenderedBatch(inversions, ws, planes, image, opacity)

    @contextlib.contextmanager
    def render_context(self) -> Iterator[None]:
        """The inverter's precision and thread settings (no gradients) for extra renders, e.g. novel views."""
        if self.fast is None:
            with torch.no_grad():
                yield
        else:
            with fast_context(self.fast, self.device):
                yield

    def invert(self, image: torch.Tensor, camera: torch.Tensor) -> Inversion:
        """One image (3, H, W) in [-1, 1] and its camera (25,) or (1, 25)."""
        return self.invert_batch([image], validate_label(camera))[0]
