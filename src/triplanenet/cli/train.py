"""``triplanenet train``: train TriPlaneNet on a dataset in the official layout (also under ``torchrun``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import torch
import typer

from triplanenet.cli.common import console, output_folder, resolve_device, user_errors
from triplanenet.io.atomic import termination_as_interrupt


def _distributed_context(device_name: str):
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1)."""
    import torch.distributed as dist

    from triplanenet.train.trainer import DistributedContext

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(), resolve_device(device_name)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistributedContext(rank=rank, world_size=world_size), device


def run_training(config_source: str, overrides: list[str], resume: str | None, device_name: str) -> dict[str, float]:
    """Python entry point behind the command (also used by tests)."""
    from triplanenet.train.build import build_trainer
    from triplanenet.train.config import load_train_config

    config = load_train_config(config_source, overrides)
    output_folder(Path(config.out), "out")
    context, device = _distributed_context(device_name)
    log = console.print if context.is_main else (lambda _message: None)
    trainer = build_trainer(config, device, context, log)
    train_set, val_set = trainer.train_set, trainer.val_set
    if resume == "auto":
        resumed = trainer.resume_latest()  # the newest intact checkpoint; broken ones are named and skipped
        if resumed is None:
            log("no checkpoint to resume from; starting a new run")
        else:
            log(f"resumed from {resumed} at step {trainer.step}")
    elif resume:
        trainer.load_checkpoint(Path(resume))
        log(f"resumed from {resume} at step {trainer.step}")
    log(f"training {len(train_set)} images ({0 if val_set is None else len(val_set)} for validation) on {device}")
    try:
        with termination_as_interrupt():  # `kill` or a scheduler's stop saves last.pt like Ctrl-C
            return trainer.fit()
    except KeyboardInterrupt:
        log(interrupt_message(trainer))
        raise


def interrupt_message(trainer) -> str:
    """What the interrupt-save achieved, as the files on disk show it (never claims a save that did not finish)."""
    path = trainer.out / "checkpoints" / "last.pt"
    if trainer.saved_steps.get("last.pt") == trainer.step and path.is_file():
        return f"saved {path} at step {trainer.step}; resume with --resume auto"
    saved = sorted(trainer.saved_steps.items(), key=lambda item: (item[1], item[0] == "last.pt"))
    newest = f"; the newest checkpoint this run saved, {saved[-1][0]}, holds step {saved[-1][1]}" if saved else ""
    return (
        f"interrupted at step {trainer.step} before {path.name} could be saved{newest}; --resume auto continues from "
        "the newest intact checkpoint in the run folder"
    )


@user_errors
def train(
    config: Annotated[
        str, typer.Argument(help="Preset (paper | v2 | official_v1 | tiny) or a .toml/.json config file.")
    ],
    override: Annotated[
        list[str] | None, typer.Option("--override", "-O", help="key=value, e.g. data=ffhq/ or psp_losses.mirror=0.")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            help="Checkpoint to resume from, or 'auto': the newest intact one in <out>/checkpoints (usually last.pt)."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "auto",
) -> None:
    """Train the TriPlaneNet encoders (v2 by default; both branches, optional discriminator phase). Multi-GPU:
    torchrun --nproc_per_node N -m triplanenet.cli.main train CONFIG.

    Example: triplanenet train v2 -O data=datasets/ffhq -O generator=ffhq512-128.pth -O irse50=model_ir_se50.pth
    -O adversarial=true -O discriminator=discriminator.pth
    """
    logs = run_training(config, list(override or []), resume, device)
    console.print("done: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items())))
