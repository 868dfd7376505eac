"""Load the StyleGAN2-ADA discriminator of TriPlaneNet v2 training from official ``.pth`` files.

Accepted contents (read with :func:`~triplanenet.io.checkpoints.safe_torch_load`; nothing in the file is executed):

* a plain discriminator state dict, as the released ``pretrained_models/discriminator.pth``;
* an official v2 training checkpoint ``{'state_dict', 'opts', ..., 'dis_state_dict', 'dis_optimizer'}``, from which
  ``dis_state_dict`` is taken.

The official coach loads with ``strict=False``; here every key and shape must match the architecture, otherwise a
one-line :class:`~triplanenet.errors.CheckpointError` names the first offending keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from triplanenet.errors import CheckpointError
from triplanenet.io.checkpoints import check_state_dict, safe_torch_load
from triplanenet.losses.discriminator import Discriminator, DiscriminatorConfig

TRAINING_CHECKPOINT_KEY = "dis_state_dict"
"""Entry of an official v2 training checkpoint that holds the discriminator weights."""


def load_discriminator(path: str | os.PathLike[str], config: DiscriminatorConfig | None = None) -> Discriminator:
    """Build a :class:`Discriminator` (``config``, default the v2 512² preset) and load ``path`` into it strictly.

    Returns the network in float32 on the CPU, in eval mode and with ``requires_grad=False`` (as the official coach
    keeps it outside its own update steps); call ``.requires_grad_(True)`` / ``.train()`` and ``.to(device)`` as needed.

    Raises:
        CheckpointError: missing, corrupt or unsafe file; no discriminator weights inside; keys or shapes that do not
            match ``config``.
    """
    from triplanenet.io.registry import resolve_checkpoint

    file = resolve_checkpoint(path)  # the name discriminator-v2 -> its cached download
    if not file.is_file():
        raise CheckpointError(
            f"discriminator checkpoint {file} not found; pass TriPlaneNet's pretrained_models/discriminator.pth "
            "(or the name discriminator-v2)"
        )
    state = _discriminator_state(file, safe_torch_load(file))
    discriminator = Discriminator(config)
    _check_keys(file, discriminator.state_dict(), state)
    discriminator.load_state_dict(state, strict=True)
    return discriminator.eval().requires_grad_(False)


def _discriminator_state(file: Path, obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and TRAINING_CHECKPOINT_KEY in obj:
        obj = obj[TRAINING_CHECKPOINT_KEY]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = ", ".join(sorted(str(k) for k in obj)[:6]) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{file}: holds no discriminator state dict (found: {found or 'an empty dict'}); pass discriminator.pth "
            f"or a v2 training checkpoint with '{TRAINING_CHECKPOINT_KEY}'"
        )
    return {str(k): v for k, v in obj.items()}


def _check_keys(file: Path, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    check_state_dict(
        expected,
        found,
        str(file),
        what="the discriminator configuration",
        advice="pass the DiscriminatorConfig the file was trained with (e.g. its img_resolution / channel_base / "
        "channel_max)",
    )
