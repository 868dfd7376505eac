"""The TriPlaneNet training loop, v1 and v2 (the WACV'24 paper), with the official code's settings as presets.

Per step (supplement, "Experiment settings"): the first branch encodes x to W+ and renders the batch at the input
camera and, when a mirror loss is on or the model is v2, at the mirrored camera in the same call; its loss is eq. (1).
From ``add_triplanenet`` on, the second branch predicts tri-plane offsets from the detached first-branch results (v1:
[ŷ, x − ŷ]; v2: [ŷ, x − ŷ, x_m − ŷ_m] and the first-branch planes) and the corrected planes are rendered at the input
camera (and the mirrored one for the mirror loss); its loss is eq. (1) with smooth-L1. The first branch is frozen at
``stop_psp``. With ``adversarial`` (v2), from ``add_discriminator`` on: a second-branch forward renders at a random
training pose (p = 1/2), the input camera (1/4) or the mirror camera (1/4); the non-saturating GAN loss on that render
takes its own tri-plane optimizer step, then the discriminator takes a logistic step on (real image, detached render)
and, every ``r1_every`` steps, a lazy R1 step. The branches and the discriminator have separate optimizers.

Operations: atomic checkpoints with optimizers, discriminator, step, RNG and best validation score; bit-exact resume
on CPU (the data order is a function of the step, rendering and pose randomness come from saved generators); Ctrl-C
saves ``last.pt`` and exits; TensorBoard scalars and image grids; several processes (``torchrun``) average gradients
with all-reduce.
"""

from __future__ import annotations

import contextlib
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
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from triplanenet.eg3d.camera import mirror_label
from triplanenet.errors import TriplaneNetError
from triplanenet.io.atomic import (
    atomic_path,
    interrupts_deferred,
    remove_stale_temporaries,
    write_json_atomic,
    write_text_atomic,
)
from triplanenet.io.model_checkpoints import TRAINING_CHECKPOINT_FORMAT as CHECKPOINT_FORMAT
from triplanenet.io.official_training import (
    ADAM_STATE,
    RANGER_STATE,
    OfficialStateError,
    optimizer_state_for,
)
from triplanenet.losses.adversarial import discriminator_logistic_loss, generator_adversarial_loss, r1_penalty
from triplanenet.losses.confnet import CONFNET_INPUT_SIZE, mirror_sigma
from triplanenet.losses.reconstruction import l1_loss, l2_loss, smooth_l1_loss
from triplanenet.model import TriPlaneNet
from triplanenet.train.config import BranchLossConfig, TrainConfig
from triplanenet.train.sampler import BatchSchedule, StepBatchSampler


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


def _load_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any], lr: float) -> None:
    """Load a state dict, then set every group's learning rate to ``lr`` (the run's, not the file's)."""
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError) as exc:
        raise OfficialStateError(f"the optimizer state does not fit ({exc})") from None
    for group in optimizer.param_groups:
        group["lr"] = lr


def training_poses(dataset: Dataset) -> torch.Tensor:
    """(N, 25) camera labels of a training set (a dataset with ``cameras``, or a ConcatDataset of them, synthetic
    samples included): the random poses of the adversarial phase (official: the training ``dataset.json``)."""
    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    cameras = [part.cameras for part in parts if isinstance(getattr(part, "cameras", None), torch.Tensor)]
    if not cameras:
        raise TrainingError("the adversarial phase draws poses from the training set's cameras, but it has none")
    return torch.cat(cameras).float()


@dataclass
class FirstBranch:
    """Detached first-branch results that the second branch reads. Images (B, 3, R, R) at the encoder resolution."""

    ws: torch.Tensor
    planes: torch.Tensor
    image: torch.Tensor
    image_mirror: torch.Tensor | None


class Trainer:
    """Owns the model, optimizers, discriminator, data order, logging and checkpoints of one run (one process of it).

    ``discriminator`` (a :class:`~triplanenet.losses.discriminator.Discriminator` at the generator's output
    resolution) is required with ``config.adversarial`` and unused otherwise.
    """

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
        discriminator: torch.nn.Module | None = None,
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
        self.val_history: list[dict[str, float]] = []
        """Every validation of this run, oldest first: ``{"step": ..., "val/...": ...}`` (kept across resumes and
        written to ``validation.json`` in the run folder)."""
        self.saved_steps: dict[str, int] = {}
        """Checkpoint name -> the step it holds, for every save this trainer completed (renamed into place)."""
        self.schedule = BatchSchedule.from_changes(config.batch_size, config.batch_changes())
        self.psp_optimizer = make_optimizer(config.optimizer, list(model.psp_encoder.parameters()), config.lr_psp)
        self.triplane_optimizer = make_optimizer(
            config.optimizer, list(model.triplanenet_encoder.parameters()), config.lr_triplane
        )
        self.confnet_optimizer = None
        if criteria.confidence is not None and criteria.confidence_trainable:
            criteria.confidence.to(device)
            self.confnet_optimizer = torch.optim.Adam(criteria.confidence.parameters(), lr=config.lr_confnet)
        self.render_rng = torch.Generator(device=device).manual_seed(config.seed * 1009 + self.context.rank)
        self.discriminator: torch.nn.Module | None = None
        self.discriminator_optimizer: torch.optim.Optimizer | None = None
        if config.adversarial:
            if discriminator is None:
                raise TrainingError("adversarial = true needs a discriminator (see train.build.build_discriminator)")
            if not model.uses_mirror:
                raise TrainingError("the adversarial phase is part of the v2 recipe; train a v2 model")
            self.discriminator = discriminator.to(device).requires_grad_(False)
            self.discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.lr_discriminator)
            self.poses = training_poses(train_set)
            self.context.broadcast_state(discriminator)
        self.pose_rng = torch.Generator().manual_seed(config.seed * 1013 + self.context.rank)
        self.autocast = device.type == "cuda" and config.amp
        self.writer = None
        self.context.broadcast_state(model)

    # -----------------------------------------------------------------------------------------------------------------
    def _render(
        self, planes: torch.Tensor, ws: torch.Tensor, camera: torch.Tensor, camera_mirror: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Render at the input camera and (same call) the mirrored camera; pooled to the encoder resolution."""
        out, out_mirror = self.model.render_pair(planes, ws, camera, camera_mirror, generator=self.render_rng)
        pool = self.model.pool_to_input
        return pool(out.image), None if out_mirror is None else pool(out_mirror.image)

    def _mirror_views(
        self, batch: dict[str, Any], x: torch.Tensor, camera: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(x_m, c_m) when a mirror loss is on or the model is v2, else (None, None); batches without mirror items
        get the flipped image and :func:`mirror_label`."""
        if not (self.config.uses_mirror or self.model.uses_mirror):
            return None, None
        x_mirror = batch["image_mirror"].to(self.device) if "image_mirror" in batch else x.flip(-1)
        camera_mirror = batch["camera_mirror"].to(self.device) if "camera_mirror" in batch else mirror_label(camera)
        return x_mirror, camera_mirror

    def _sigma(self, x: torch.Tensor, x_mirror: torch.Tensor | None, batch: dict[str, Any]) -> torch.Tensor | None:
        """σ aligned with the mirrored input (B, 1, R, R), detached; None means σ = 1 (or no mirror loss)."""
        if x_mirror is None or not self.config.uses_mirror:
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

    def _refine(self, x: torch.Tensor, x_mirror: torch.Tensor | None, first: FirstBranch) -> torch.Tensor:
        """Second branch: the corrected planes (B, 3, C, R, R) = first-branch planes + offsets."""
        offsets = self.model.predict_offsets(x, first.image, first.planes, x_mirror, first.image_mirror)
        return first.planes + offsets.view_as(first.planes)

    def training_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimisation step of both branches and the discriminator (as the schedule allows). Returns the logged
        scalars."""
        cfg, model = self.config, self.model
        factor = cfg.lr_factor(self.step)
        for optimizer, lr in ((self.psp_optimizer, cfg.lr_psp), (self.triplane_optimizer, cfg.lr_triplane)):
            for group in optimizer.param_groups:
                group["lr"] = lr * factor
        train_psp = self.step < cfg.stop_psp
        train_triplane = self.step >= cfg.add_triplanenet
        model.psp_encoder.train(train_psp)
        model.triplanenet_encoder.train(train_triplane)
        x = batch["image"].to(self.device)
        camera = batch["camera"].to(self.device)
        x_mirror, camera_mirror = self._mirror_views(batch, x, camera)
        loss_camera_mirror = camera_mirror if cfg.uses_mirror else None  # final renders for the mirror loss only
        sigma = self._sigma(x, x_mirror, batch)
        logs: dict[str, float] = {}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            with torch.set_grad_enabled(train_psp):
                ws = model.encode_ws(x)
                planes = model.decoder.planes(ws)
                y, y_mirror = self._render(planes, ws, camera, camera_mirror)
            if train_psp:
                loss, parts = branch_loss(cfg.psp_losses, self.criteria, x, y, x_mirror, y_mirror, sigma, "psp")
                self._optimise(loss, self.psp_optimizer, model.psp_encoder, "psp")
                logs.update(parts)
            first = FirstBranch(
                ws.detach(), planes.detach(), y.detach(), None if y_mirror is None else y_mirror.detach()
            )
            final, final_mirror = first.image, first.image_mirror
            if train_triplane:
                final, final_mirror = self._render(
                    self._refine(x, x_mirror, first), first.ws, camera, loss_camera_mirror
                )
                loss, parts = branch_loss(
                    cfg.triplane_losses, self.criteria, x, final, x_mirror, final_mirror, sigma, "triplane"
                )
                self._optimise(loss, self.triplane_optimizer, model.triplanenet_encoder, "triplane")
                logs.update(parts)
        if self.discriminator is not None and train_triplane and self.step >= cfg.add_discriminator:
            assert x_mirror is not None and camera_mirror is not None  # v2
            logs.update(self._adversarial_step(batch, x, x_mirror, camera, camera_mirror, first))
        if self.confnet_optimizer is not None and cfg.uses_mirror and x_mirror is not None and final_mirror is not None:
            assert self.criteria.confidence is not None
            self.criteria.confidence.train()
            nll = self.criteria.laplacian_nll(x_mirror, final_mirror.detach(), self._learned_sigma(x_mirror))
            self._optimise(nll, self.confnet_optimizer, self.criteria.confidence, "confnet")
            logs["confnet/nll"] = nll.item()
        self._last_images = (x, y.detach(), final.detach(), x_mirror, final_mirror)
        return logs

    def _fake_camera(self, camera: torch.Tensor, camera_mirror: torch.Tensor) -> torch.Tensor:
        """Camera of the adversarial render: random training poses (p = 1/2, without replacement), else the input
        (1/4) or the mirror camera (1/4); drawn from the saved ``pose_rng``."""
        coins = torch.rand(2, generator=self.pose_rng)
        if coins[0] < 0.5:
            picks = torch.randperm(len(self.poses), generator=self.pose_rng)[: camera.shape[0]]
            return self.poses[picks].to(camera)
        return camera if coins[1] < 0.5 else camera_mirror

    def _adversarial_step(
        self,
        batch: dict[str, Any],
        x: torch.Tensor,
        x_mirror: torch.Tensor,
        camera: torch.Tensor,
        camera_mirror: torch.Tensor,
        first: FirstBranch,
    ) -> dict[str, float]:
        """GAN loss on a full-resolution render of the (just updated) second branch, then the discriminator's logistic
        and lazy R1 steps. The discriminator runs in float32 outside autocast."""
        cfg, critic = self.config, self.discriminator
        assert critic is not None and self.discriminator_optimizer is not None
        fake_camera = self._fake_camera(camera, camera_mirror)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            planes = self._refine(x, x_mirror, first)
            fake = self.model.decoder.render(planes, first.ws, fake_camera, generator=self.render_rng).image.float()
        g_loss = generator_adversarial_loss(critic(fake))
        self._optimise(cfg.adv_weight * g_loss, self.triplane_optimizer, self.model.triplanenet_encoder, "adversarial")
        real = batch["image_full"].to(self.device)
        critic.requires_grad_(True)
        d_loss = discriminator_logistic_loss(critic(real), critic(fake.detach()))
        self._optimise(d_loss, self.discriminator_optimizer, critic, "discriminator")
        logs = {"adv/g": g_loss.item(), "adv/d": d_loss.item()}
        if self.step % cfg.r1_every == 0:
            r1 = r1_penalty(critic, real)
            self._optimise(cfg.r1_gamma / 2 * cfg.r1_every * r1, self.discriminator_optimizer, critic, "R1")
            logs["adv/r1"] = r1.item()
        critic.requires_grad_(False)
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
        batch_size = self.schedule.at(self.step)
        loader = DataLoader(self.val_set, batch_size=batch_size, shuffle=False, collate_fn=collate)
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
            "val_history": json.dumps(self.val_history),
            "psp_optimizer": self.psp_optimizer.state_dict(),
            "triplane_optimizer": self.triplane_optimizer.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "render": self.render_rng.get_state(),
                "poses": self.pose_rng.get_state(),
            },
        }
        if self.confnet_optimizer is not None and self.criteria.confidence is not None:
            state["confnet"] = self.criteria.confidence.state_dict()
            state["confnet_optimizer"] = self.confnet_optimizer.state_dict()
        if self.discriminator is not None and self.discriminator_optimizer is not None:
            state["discriminator"] = self.discriminator.state_dict()
            state["discriminator_optimizer"] = self.discriminator_optimizer.state_dict()
        return state

    def save_checkpoint(self, name: str) -> Path:
        """Write ``checkpoints/<name>`` atomically (rank 0 only) and record it in :attr:`saved_steps`.

        Ctrl-C is held back while the file is written, so a save always completes; the interrupt is raised as
        ``KeyboardInterrupt`` right after it."""
        path = self.out / "checkpoints" / name
        if self.context.is_main:
            with interrupts_deferred():
                with atomic_path(path) as tmp:
                    torch.save(self.checkpoint_state(), tmp)
                self.saved_steps[name] = self.step
        return path

    def read_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Read a checkpoint of this run's architecture without applying it.

        Raises:
            CheckpointError: the file is missing, truncated or corrupt.
            TrainingError: not a training checkpoint, or another architecture.
        """
        from triplanenet.io.checkpoints import safe_torch_load

        state = safe_torch_load(path)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"{path}: not a triplanenet training checkpoint (written by `triplanenet train`)")
        try:
            saved_model = json.loads(state["model_config"])
        except (KeyError, TypeError, ValueError):
            raise TrainingError(f"{path}: the checkpoint has no readable model_config; the file is corrupt") from None
        if saved_model != json.loads(json.dumps(self.model.config.to_dict())):
            raise TrainingError(f"{path}: the checkpoint's model architecture differs from this run's config")
        return state

    def resume_latest(self) -> Path | None:
        """Resume from the newest checkpoint in ``<out>/checkpoints`` that reads back intact (``--resume auto``).

        Candidates are the run's ``*.pt`` files, newest first (the order they were saved in); one that cannot be
        read (e.g. ``last.pt`` truncated by a killed save) is logged and skipped for the next older one.

        Returns:
            The checkpoint resumed from, or None when the folder holds none.

        Raises:
            TrainingError: there are checkpoints but none of them is intact.
        """
        from triplanenet.errors import CheckpointError

        folder = self.out / "checkpoints"
        candidates = sorted(
            (p for p in folder.glob("*.pt") if p.is_file() and not p.name.startswith(".")),
            key=lambda p: (p.stat().st_mtime, p.name == "last.pt"),
            reverse=True,
        )
        problems = []
        for path in candidates:
            try:
                state = self.read_checkpoint(path)
            except (CheckpointError, TrainingError) as exc:
                problems.append(f"{path.name}: {exc}")
                self.log(f"cannot resume from {path} ({exc}); trying the next newest checkpoint")
                continue
            self.apply_checkpoint(state)
            if problems:
                self.log(f"resuming from {path.name} instead, the newest intact checkpoint (step {self.step})")
            return path
        if problems:
            raise TrainingError(
                f"no intact checkpoint to resume from in {folder} ({'; '.join(problems)[:400]}); move the broken "
                "files away to start a new run there"
            )
        return None

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore everything :meth:`checkpoint_state` saved (weights, optimizers, step, RNG, best score)."""
        self.apply_checkpoint(self.read_checkpoint(path))

    def apply_checkpoint(self, state: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`read_checkpoint`."""
        self.model.load_state_dict(state["state_dict"], strict=True)
        self.model.set_latent_avg(state["latent_avg"])
        self.psp_optimizer.load_state_dict(state["psp_optimizer"])
        self.triplane_optimizer.load_state_dict(state["triplane_optimizer"])
        if "confnet" in state and self.criteria.confidence is not None and self.confnet_optimizer is not None:
            self.criteria.confidence.load_state_dict(state["confnet"])
            self.confnet_optimizer.load_state_dict(state["confnet_optimizer"])
        if "discriminator" in state and self.discriminator is not None and self.discriminator_optimizer is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        self.step = int(state["step"])
        self.best_val = float(state["best_val_loss"])
        self.val_history = json.loads(state.get("val_history", "[]"))
        torch.set_rng_state(state["rng"]["torch"])
        self.render_rng.set_state(state["rng"]["render"])
        if "poses" in state["rng"]:
            self.pose_rng.set_state(state["rng"]["poses"])

    def load_official_state(self, official: dict[str, Any], path: str | Path) -> None:
        """Fine-tuning from an official TriPlaneNet training file (:mod:`triplanenet.io.official_training`), given
        its contents (:func:`~triplanenet.io.official_training.read_official_checkpoint`) and its path (for
        messages): load its Ranger states into the encoders' optimizers (learning rates stay this run's) and, with
        ``adversarial``, its discriminator and that Adam state. The run starts at step 0 of this schedule: the
        file's ``step`` is logged, not resumed (the released models sit at their ``max_steps``).

        Raises:
            TrainingError: states that do not fit this run's modules or optimizers.
        """
        weights = official["state_dict"]
        self.log(f"{path}: official checkpoint saved at step {official.get('step')}; fine-tuning starts at step 0")
        try:
            encoders = (
                ("psp_optimizer", self.psp_optimizer, "psp_encoder.", self.model.psp_encoder, self.config.lr_psp),
                (
                    "triplane_optimizer",
                    self.triplane_optimizer,
                    "triplanenet_encoder.",
                    self.model.triplanenet_encoder,
                    self.config.lr_triplane,
                ),
            )
            for key, optimizer, prefix, module, lr in encoders:
                if key not in official:
                    continue
                if self.config.optimizer != "ranger":
                    self.log(f"note: {path}: {key} is a Ranger state; optimizer = {self.config.optimizer} starts fresh")
                    continue
                if key == "triplane_optimizer" and self.config.triplane_width != 1.0:
                    self.log(f"note: {path}: the second branch was widened; its optimizer starts fresh")
                    continue
                saved = optimizer_state_for(official[key], weights, prefix, module, RANGER_STATE, f"{path}: {key}")
                _load_optimizer(optimizer, saved, lr)
            if self.discriminator is not None and self.discriminator_optimizer is not None:
                self._load_official_discriminator(official, str(path))
        except OfficialStateError as exc:
            raise TrainingError(str(exc)) from None

    def _load_official_discriminator(self, official: dict[str, Any], path: str) -> None:
        assert self.discriminator is not None and self.discriminator_optimizer is not None
        weights = official.get("dis_state_dict")
        if weights is None:
            return
        if self.config.discriminator:
            self.log(f"note: {path} holds a discriminator; it replaces discriminator = {self.config.discriminator}")
        try:
            self.discriminator.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise TrainingError(f"{path}: its discriminator does not fit this run's ({detail})") from None
        if "dis_optimizer" in official:
            saved = optimizer_state_for(
                official["dis_optimizer"], weights, "", self.discriminator, ADAM_STATE, f"{path}: dis_optimizer"
            )
            _load_optimizer(self.discriminator_optimizer, saved, self.config.lr_discriminator)

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
        """Train from ``self.step`` to ``max_steps``. Ctrl-C saves ``last.pt`` and re-raises KeyboardInterrupt.

        A further Ctrl-C during that save does not cut it short (it stops the run once the file is complete);
        :attr:`saved_steps` tells whether ``last.pt`` holds the step reached. Partial checkpoint files that a
        killed earlier run left behind are deleted first."""
        cfg = self.config
        if self.context.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2))
            stale = remove_stale_temporaries(self.out / "checkpoints")
            if stale:
                self.log(f"removed {len(stale)} partial checkpoint file(s) left by an interrupted save")
        sampler = StepBatchSampler(
            len(self.train_set),
            self.schedule,
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
                if self.step > 0 and self.schedule.at(self.step) != self.schedule.at(self.step - 1):
                    self.log(f"step {self.step}: batch size {self.schedule.at(self.step)} per process")
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
            # A second Ctrl-C while saving is deferred until the file is complete, then ends the run; one that
            # lands before the save began leaves saved_steps["last.pt"] behind self.step (the CLI reports that).
            with contextlib.suppress(KeyboardInterrupt):
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
        self.val_history.append({"step": float(self.step), **values})
        if self.context.is_main:
            write_json_atomic(self.out / "validation.json", self.val_history)
        score = values.get("val/mse_final", values["val/mse_psp"])
        self.log(f"step {self.step}: " + ", ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in values.items()))
        if score < self.best_val:
            self.best_val = score
            self.save_checkpoint("best.pt")
