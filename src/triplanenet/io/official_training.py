"""Official TriPlaneNet training files (``triplanenet_v2_final.pth`` and the like), read for fine-tuning.

Such a file is a dict ``{'state_dict', 'opts', 'step', 'best_val_loss', 'psp_optimizer', 'triplane_optimizer'}``,
plus ``'dis_state_dict'`` and ``'dis_optimizer'`` when it was trained with the discriminator. Its optimizer states
are ordinary ``torch.optim`` state dicts: per parameter index ``step``, ``exp_avg``, ``exp_avg_sq`` (and Ranger's
``slow_buffer``); the indices follow the parameter order of the official module, which is the order of the
parameters among the file's ``state_dict`` keys. :func:`optimizer_state_for` re-indexes a state by parameter name
for our modules, so a different registration order cannot pair a moment with the wrong weight.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from triplanenet.errors import TriplaneNetError

RANGER_STATE = ("step", "exp_avg", "exp_avg_sq", "slow_buffer")
"""Per-parameter entries of a (official or our) Ranger state."""
ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")
"""Per-parameter entries of an Adam state."""


class OfficialStateError(TriplaneNetError):
    """An official file's optimizer or discriminator state does not fit this run."""


def read_official_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The contents of an official TriPlaneNet training file, or None for our formats (``.safetensors`` models,
    ``triplanenet train`` checkpoints). Read with :func:`~triplanenet.io.checkpoints.safe_torch_load` (official
    files are torch zips)."""
    from triplanenet.io.checkpoints import safe_torch_load

    file = Path(path)
    if not zipfile.is_zipfile(file):
        return None
    obj = safe_torch_load(file)
    if isinstance(obj, dict) and "state_dict" in obj and "opts" in obj and "format" not in obj:
        return obj
    return None


def optimizer_state_for(
    saved: Any,
    file_weights: dict[str, torch.Tensor],
    prefix: str,
    module: nn.Module,
    entries: tuple[str, ...],
    source: str,
) -> dict[str, Any]:
    """Re-index an official optimizer state over ``module``'s parameters (single parameter group).

    Args:
        saved: the file's optimizer state dict.
        file_weights: the file's weights, in their saved order (gives the parameter order of ``saved``).
        prefix: the module's key prefix in ``file_weights`` (``'psp_encoder.'``; ``''`` for a discriminator file).
        module: our module whose optimizer will load the result.
        entries: the per-parameter entries the optimizer needs (:data:`RANGER_STATE` or :data:`ADAM_STATE`).
        source: names the state in errors (``'file.pth: psp_optimizer'``).

    Raises:
        OfficialStateError: not a one-group state, or parameter counts, names, entries or shapes that differ.
    """
    params = dict(module.named_parameters())
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(saved.get("state"), dict):
        raise OfficialStateError(f"{source}: not a single-group optimizer state dict; start without it")
    order = [key[len(prefix) :] for key in file_weights if key.startswith(prefix) and key[len(prefix) :] in params]
    ids = list(groups[0]["params"])
    if len(ids) != len(params) or sorted(order) != sorted(params):
        raise OfficialStateError(
            f"{source}: holds {len(ids)} parameters, the model {len(params)}; the file is for another architecture"
        )
    by_name = dict(zip(order, ids, strict=True))
    state: dict[int, dict[str, Any]] = {}
    for index, (name, parameter) in enumerate(params.items()):
        entry = saved["state"].get(by_name[name])
        if entry is None:
            continue  # never stepped (no gradient yet): the optimizer starts it fresh
        missing = [key for key in entries if key not in entry]
        if missing:
            raise OfficialStateError(
                f"{source}: the state of {name} lacks {', '.join(missing)}; it was written by another optimizer"
            )
        if tuple(entry["exp_avg"].shape) != tuple(parameter.shape):
            raise OfficialStateError(
                f"{source}: the moments of {name} are {tuple(entry['exp_avg'].shape)}, the weight "
                f"{tuple(parameter.shape)}"
            )
        state[index] = dict(entry)
    return {"state": state, "param_groups": [{**groups[0], "params": list(range(len(params)))}]}
