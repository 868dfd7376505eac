"""The TriPlaneNet training loop (paper recipe, with the official code's settings as a preset).

Per step (supplement, "Experiment settings"): the first branch encodes x to W+ and renders the batch at the input
camera and, when the mirror prior is on, at the mirrored camera in the same call; its loss is eq. (1). From
``add_triplanenet`` on, the second branch predicts tri-plane offsets from [ŷ, x − ŷ] (detached first-branch results)
and the offset planes are rendered at both cameras; its loss is eq. (1) with smooth-L1. The first branch is frozen
at ``stop_psp``. The two branches have separate optimizers and disjoint graphs.

Operations: atomic checkpoints with optimizers, step, RNG and best validation score; bit-exact resume on CPU (the data
order is a function of the step, rendering randomness comes from a saved generator); Ctrl-C saves ``last.pt`` and
exits; TensorBoard scalars and image grids; several processes (``torchrun``) average gradients with all-reduce.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from triplanenet.errors import TriplaneNetError
from triplanenet.io.atomic import atomic_path, write_text_atomic
from triplanenet.io.model_checkpoints import TRAINING_CHECKPOINT_FORMAT as CHECKPOINT_FORMAT
from triplanenet.losses.confnet import CONFNET_INPUT_SIZE, mirror_sigma
from triplanenet.losses.reconstruction import l1_loss, l2_loss, smooth_l1_loss
from triplanenet.model import TriPlaneNet
from triplanenet.train.config import BranchLossConfig, TrainConfig
from triplanenet.train.sampler import StepBatchSampler


class TrainingError(TriplaneNetError):
    """Training cannot continue (non-finite loss, incompatible checkpoint, ...)."""


# ---------------------------------------------------------------------------------------------------------------------
# Loss functions used by the trainer (built once, see ``build_criteria``)


@dataclass
class Criteria:
    """The loss functions of a run. Images are (B, 3, R, R) in [-1, 1]; σ maps (B, 1, R, R) > 0.

    ``lpips(a, b)`` and ``identity(a, b)`` return batch means; either may be None (term disabled).
    ``confidence`` is a σ-net (unsup3d ConfNet): a fixed pretrained one (σ of x_m = the mirrored flip-σ of x, as the
    official conf maps), or, with ``confidence_trainable``, one trained from scratch on x_m with the Laplacian
    likelihood (eq. 4). None and no dataset maps: σ = 1.
    """

    lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    identity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    symmetry: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, str], torch.Tensor]
    laplacian_nll: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    confidence: torch.nn.Module | None = None
    confidence_trainable: bool = False
    notes: list[str] = field(default_factory=list)


PIXEL_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l2": l2_loss,
    "smooth_l1": smooth_l1_loss,
    "l1": l1_loss,
}


def branch_loss(
    weights: BranchLossConfig,
    criteria: Criteria,
    x: torch.Tensor,
    y: torch.Tensor,
    x_mirror: torch.Tensor | None,
    y_mirror: torch.Tensor | None,
    sigma: torch.Tensor | None,
    prefix: str,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. (1): reconstruction (eq. 2) + λm · mirror prior (eq. 3). Returns the loss and its logged parts."""
    logs: dict[str, float] = {}
    pixel = PIXEL_LOSSES[weights.pixel](y, x)
    total = weights.pixel_weight * pixel
    logs[f"{prefix}/{weights.pixel}"] = pixel.item()
    if criteria.lpips is not None and weights.lpips_weight:
        lpips = criteria.lpips(y, x)
        total = total + weights.lpips_weight * lpips
        logs[f"{prefix}/lpips"] = lpips.item()
    if criteria.identity is not None and weights.id_weight:
        identity = criteria.identity(y, x)
        total = total + weights.id_weight * identity
        logs[f"{prefix}/id"] = identity.item()
    if weights.mirror and x_mirror is not None and y_mirror is not None:
        sigma_map = sigma if sigma is not None else torch.ones_like(x_mirror[:, :1])
        mirror = weights.symmetry_weight * criteria.symmetry(x_mirror, y_mirror, sigma_map, weights.pixel)
        logs[f"{prefix}/symmetry"] = mirror.item()
        if criteria.lpips is not None and weights.mirror_lpips_weight:
            mirror_lpips = criteria.lpips(y_mirror, x_mirror)
            mirror = mirror + weights.mirror_lpips_weight * mirror_lpips
            logs[f"{prefix}/mirror_lpips"] = mirror_lpips.item()
        if criteria.identity is not None and weights.mirror_id_weight:
            mirror_id = criteria.identity(y_mirror, x_mirror)
            mirror = mirror + weights.mirror_id_weight * mirror_id
            logs[f"{prefix}/mirror_id"] = mirror_id.item()
        total = total + weights.mirror * mirror
    logs[f"{prefix}/total"] = total.item()
    return total, logs


# ---------------------------------------------------------------------------------------------------------------------
# Distributed helpers


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def average_gradients(self, module: torch.nn.Module) -> None:
        if not self.enabled:
            return
        for parameter in module.parameters():
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
                parameter.grad.div_(self.world_size)

    def broadcast_state(self, module: torch.nn.Module) -> None:
        """Make every process hold rank 0's parameters and buffers (start of training, BN statistics)."""
        if not self.enabled:
            return
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


# ---------------------------------------------------------------------------------------------------------------------


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; keep names as a list."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


def make_optimizer(name: str, parameters: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if name == "ranger":
        from triplanenet.train.ranger import Ranger

        return Ranger(parameters, lr=lr)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    raise TrainingError(f"unknown optimizer {name!r}: use ranger or adam")


class Trainer:
    """Owns the model, optimizers, data order, logging and checkpoints of one run (one process of it)."""

    def __init__(
        self,
        config: TrainConfig,
        model: TriPlaneNet,
        train_set: Dataset,
        val_set: Dataset | None,
        criteria: Criteria,
        device: torch.device,
        context: DistributedContext | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.model = model.to(device)
        self.train_set = train_set
        self.val_set = val_set
        self.criteria = criteria
        self.device = device
        self.context = context or DistributedContext()
        self.log = log
        self.out = Path(config.out)
        self.step = 0
        self.best_val = math.inf
        self.psp_optimizer = make_optimizer(config.optimizer, list(model.psp_encoder.parameters()), config.lr_psp)
        self.triplane_optimizer = make_optimizer(
            config.optimizer, list(model.triplanenet_encoder.parameters()), config.lr_triplane
        )
        self.confnet_optimizer = None
        if criteria.confidence is not None and criteria.confidence_trainable:
            criteria.confidence.to(device)
            self.confnet_optimizer = torch.optim.Adam(criteria.confidence.parameters(), lr=config.lr_confnet)
        self.render_rng = torch.Generator(device=device).manual_seed(config.seed * 1009 + self.context.rank)
        self.autocast = device.type == "cuda" and config.amp
        self.writer = None
        self.context.broadcast_state(model)

    # -----------------------------------------------------------------------------------------------------------------
    def _render_pair(
        self, planes: torch.Tensor, ws: torch.Tensor, camera: torch.Tensor, camera_mirror: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Render at the input camera and (same call) the mirrored camera; pooled to the encoder resolution."""
        if camera_mirror is None:
            out = self.model.decoder.render(planes, ws, camera, generator=self.render_rng)
            return self.model.pool_to_input(out.image), None
        out = self.model.decoder.render(
            torch.cat([planes, planes]),
            torch.cat([ws, ws]),
            torch.cat([camera, camera_mirror]),
            generator=self.render_rng,
        )
        images = self.model.pool_to_input(out.image)
        return images[: planes.shape[0]], images[planes.shape[0] :]

    def _sigma(self, x: torch.Tensor, x_mirror: torch.Tensor | None, batch: dict[str, Any]) -> torch.Tensor | None:
        """σ aligned with the mirrored input (B, 1, R, R), detached; None means σ = 1."""
        if x_mirror is None:
            return None
        if self.config.confidence == "maps":
            return batch["confidence_mirror"].to(self.device)
        confnet = self.criteria.confidence
        if confnet is None:
            return None
        if self.criteria.confidence_trainable:
            with torch.no_grad():
                return self._learned_sigma(x_mirror)
        return mirror_sigma(confnet.predict_sigma(x, output_size=x.shape[-1]))

    def _learned_sigma(self, x_mirror: torch.Tensor) -> torch.Tensor:
        """Differentiable σ of the σ-net trained with eq. 4: x_m at 64² -> channel 0 -> upsampled to R."""
        assert self.criteria.confidence is not None
        small = F.interpolate(x_mirror, size=(CONFNET_INPUT_SIZE,) * 2, mode="bilinear", align_corners=False)
        sigma = self.criteria.confidence(small)[0][:, :1]
        return F.interpolate(sigma, size=x_mirror.shape[-2:], mode="bilinear", align_corners=False)

    def training_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimisation step of both branches (as the schedule allows). Returns logged scalars."""
        cfg, model = self.config, self.model
        train_psp = self.step < cfg.stop_psp
        train_triplane = self.step >= cfg.add_triplanenet
        model.psp_encoder.train(train_psp)
        model.triplanenet_encoder.train(train_triplane)
        x = batch["image"].to(self.device)
        camera = batch["camera"].to(self.device)
        use_mirror = cfg.uses_mirror
        x_mirror = batch["image_mirror"].to(self.device) if use_mirror else None
        camera_mirror = batch["camera_mirror"].to(self.device) if use_mirror else None
        sigma = self._sigma(x, x_mirror, batch)
        logs: dict[str, float] = {}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            with torch.set_grad_enabled(train_psp):
                ws = model.encode_ws(x)
                planes = model.decoder.planes(ws)
                y, y_mirror = self._render_pair(planes, ws, camera, camera_mirror)
            if train_psp:
                loss, parts = branch_loss(cfg.psp_losses, self.criteria, x, y, x_mirror, y_mirror, sigma, "psp")
                self._optimise(loss, self.psp_optimizer, model.psp_encoder, "psp")
                logs.update(parts)
            final, final_mirror = y.detach(), None if y_mirror is None else y_mirror.detach()
            if train_triplane:
                planes_d = planes.detach()
                offsets = model.predict_offsets(x, y.detach(), planes_d)
                final, final_mirror = self._render_pair(
                    planes_d + offsets.view_as(planes_d), ws.detach(), camera, camera_mirror
                )
                loss, parts = branch_loss(
                    cfg.triplane_losses, self.criteria, x, final, x_mirror, final_mirror, sigma, "triplane"
                )
                self._optimise(loss, self.triplane_optimizer, model.triplanenet_encoder, "triplane")
                logs.update(parts)
        if self.confnet_optimizer is not None and x_mirror is not None and final_mirror is not None:
            assert self.criteria.confidence is not None
            self.criteria.confidence.train()
            nll = self.criteria.laplacian_nll(x_mirror, final_mirror.detach(), self._learned_sigma(x_mirror))
            self._optimise(nll, self.confnet_optimizer, self.criteria.confidence, "confnet")
            logs["confnet/nll"] = nll.item()
        self._last_images = (x, y.detach(), final.detach(), x_mirror, final_mirror)
        return logs

    def _optimise(
        self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, module: torch.nn.Module, name: str
    ) -> None:
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the {name} loss became {loss.item()} at step {self.step}; lower the learning rate or resume from "
                f"{self.out / 'checkpoints' / 'last.pt'}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.context.average_gradients(module)
        optimizer.step()

    # -----------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean losses and metrics over the validation split (deterministic rendering)."""
        if self.val_set is None or len(self.val_set) == 0:
            return {}
        model = self.model
        model.eval()
        loader = DataLoader(self.val_set, batch_size=self.config.batch_size, shuffle=False, collate_fn=collate)
        totals: dict[str, float] = {}
        count = 0
        for index, batch in enumerate(loader):
            if self.config.val_batches is not None and index >= self.config.val_batches:
                break
            x = batch["image"].to(self.device)
            camera = batch["camera"].to(self.device)
            out = model(x, camera, deterministic=True)
            values = {"val/mse_psp": F.mse_loss(out.image_psp, x).item()}
            if self.step >= self.config.add_triplanenet:
                values["val/mse_final"] = F.mse_loss(out.image, x).item()
            if self.criteria.lpips is not None:
                values["val/lpips_psp"] = self.criteria.lpips(out.image_psp, x).item()
                if self.step >= self.config.add_triplanenet:
                    values["val/lpips_final"] = self.criteria.lpips(out.image, x).item()
            for key, value in values.items():
                totals[key] = totals.get(key, 0.0) + value * x.shape[0]
            count += x.shape[0]
        return {key: value / max(count, 1) for key, value in totals.items()}

    # -----------------------------------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "state_dict": self.model.state_dict(),
            "latent_avg": self.model.latent_avg.detach().cpu(),
            "model_config": json.dumps(self.model.config.to_dict()),
            "config": json.dumps(self.config.to_dict()),
            "step": self.step,
            "best_val_loss": self.best_val,
            "psp_optimizer": self.psp_optimizer.state_dict(),
            "triplane_optimizer": self.triplane_optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "render": self.render_rng.get_state()},
        }
        if self.confnet_optimizer is not None and self.criteria.confidence is not None:
            state["confnet"] = self.criteria.confidence.state_dict()
            state["confnet_optimizer"] = self.confnet_optimizer.state_dict()
        return state

    def save_checkpoint(self, name: str) -> Path:
        """Write ``checkpoints/<name>`` atomically (rank 0 only)."""
        path = self.out / "checkpoints" / name
        if self.context.is_main:
            with atomic_path(path) as tmp:
                torch.save(self.checkpoint_state(), tmp)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything :meth:`checkpoint_state` saved (weights, optimizers, step, RNG, best score)."""
        from triplanenet.io.checkpoints import safe_torch_load

        state = safe_torch_load(path)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"{path}: not a triplanenet training checkpoint (written by `triplanenet train`)")
        saved_model = json.loads(state["model_config"])
        if saved_model != json.loads(json.dumps(self.model.config.to_dict())):
            raise TrainingError(f"{path}: the checkpoint's model architecture differs from this run's config")
        self.model.load_state_dict(state["state_dict"], strict=True)
        self.model.set_latent_avg(state["latent_avg"])
        self.psp_optimizer.load_state_dict(state["psp_optimizer"])
        self.triplane_optimizer.load_state_dict(state["triplane_optimizer"])
        if "confnet" in state and self.criteria.confidence is not None and self.confnet_optimizer is not None:
            self.criteria.confidence.load_state_dict(state["confnet"])
            self.confnet_optimizer.load_state_dict(state["confnet_optimizer"])
        self.step = int(state["step"])
        self.best_val = float(state["best_val_loss"])
        torch.set_rng_state(state["rng"]["torch"])
        self.render_rng.set_state(state["rng"]["render"])

    # -----------------------------------------------------------------------------------------------------------------
    def _writer(self):
        if self.writer is None and self.context.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "logs"))
        return self.writer

    def _log_scalars(self, values: dict[str, float]) -> None:
        writer = self._writer()
        if writer is None:
            return
        for key, value in values.items():
            writer.add_scalar(key, value, self.step)

    def _log_images(self) -> None:
        writer = self._writer()
        if writer is None or not hasattr(self, "_last_images"):
            return
        rows = [t[:4].float().cpu() for t in self._last_images if t is not None]
        grid = torch.cat([torch.cat(list(row), dim=2) for row in rows], dim=1)  # (3, rows·R, n·R)
        writer.add_image("train/input_psp_final_mirror", (grid.clamp(-1, 1) + 1) / 2, self.step)

    def fit(self, on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
        """Train from ``self.step`` to ``max_steps``. Ctrl-C saves ``last.pt`` and re-raises KeyboardInterrupt."""
        cfg = self.config
        if self.context.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2))
        sampler = StepBatchSampler(
            len(self.train_set),
            cfg.batch_size,
            cfg.seed,
            self.step,
            cfg.max_steps,
            self.context.rank,
            self.context.world_size,
        )
        loader = DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=cfg.workers,
            collate_fn=collate,
            persistent_workers=cfg.workers > 0,
        )
        last_logs: dict[str, float] = {}
        started = time.perf_counter()
        first_step = self.step
        try:
            for batch in loader:
                logs = self.training_step(batch)
                self.step += 1
                last_logs = logs
                if on_step is not None:
                    on_step(self.step, logs)
                if self.step % cfg.log_every == 0:
                    logs = {**logs, "train/steps_per_s": (self.step - first_step) / (time.perf_counter() - started)}
                    self._log_scalars(logs)
                if self.step % cfg.image_every == 0:
                    self._log_images()
                if self.step % cfg.val_every == 0 or self.step == cfg.max_steps:
                    self._validate_and_track()
                if self.step % cfg.save_every == 0:
                    self.save_checkpoint(f"step_{self.step:08d}.pt")
                    self.save_checkpoint("last.pt")
        except KeyboardInterrupt:
            self.save_checkpoint("last.pt")
            raise
        finally:
            if self.writer is not None:
                self.writer.flush()
        self.save_checkpoint("last.pt")
        return last_logs

    def _validate_and_track(self) -> None:
        values = self.validate()
        if not values:
            return
        self._log_scalars(values)
        score = values.get("val/mse_final", values["val/mse_psp"])
        self.log(f"step {self.step}: " + ", ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in values.items()))
        if score < self.best_val:
            self.best_val = score
            self.save_checkpoint("best.pt")
