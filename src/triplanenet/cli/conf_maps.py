"""``triplanenet conf-maps``: σ-net confidence maps for a dataset, in the official ``conf_map/<stem>.npy`` layout.

The maps are what TriPlaneNet v2's symmetry (mirror) loss reads: for each image ``<name>.png`` of the dataset,
``conf_map/<stem>.npy`` is a float32 (256, 256) array of σ > 0 (larger = the mirrored face is less trustworthy
there), computed on the unmirrored aligned crop (:meth:`~triplanenet.losses.confnet.ConfNet.predict_sigma`).
:class:`~triplanenet.data.dataset.FaceDataset` with ``confidence_maps=True`` then finds them by file stem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from triplanenet.cli.common import console, resolve_device, user_errors
from triplanenet.cli.sharding import job_progress, throughput
from triplanenet.distributed.shard import shard
from triplanenet.distributed.world import process_group
from triplanenet.errors import ConfigError, TriplaneNetError


def load_sigma_net(path: Path | None, device: torch.device):
    """The bundled σ-net, our ``.safetensors`` σ-net, or an unsup3d checkpoint (``netC``, nf 64)."""
    if path is None:
        from triplanenet.demo import load_default_sigma_net

        return load_default_sigma_net().to(device)
    if path.suffix.lower() == ".safetensors":
        import json

        from triplanenet.demo import SIGMA_NET_FORMAT
        from triplanenet.io.safetensors_files import read_safetensors
        from triplanenet.losses.confnet import ConfNet

        state, metadata = read_safetensors(path, SIGMA_NET_FORMAT, "σ-net", "pass a σ-net saved by triplanenet")
        config = json.loads(metadata["config"])
        network = ConfNet(nf=config["nf"], zdim=config["zdim"])
        network.load_state_dict(state, strict=True)
        return network.to(device).eval().requires_grad_(False)
    from triplanenet.losses.confnet import load_confnet

    return load_confnet(path, device=device)


@user_errors
def conf_maps(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder with dataset.json and aligned crops.")],
    sigma_net: Annotated[
        Path | None,
        typer.Option(help="σ-net: our .safetensors, or unsup3d checkpoint030.pth. Default: the bundled one."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 16,
    overwrite: Annotated[
        bool, typer.Option("--overwrite/--skip-existing", help="Recompute maps that already exist.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Keep the maps an earlier run completed (each is read back: float32 256x256, finite) and compute "
            "the others; what --skip-existing does too.",
        ),
    ] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "auto",
) -> None:
    """Write conf_map/<stem>.npy (float32 256×256 σ) for every image of a dataset, for the v2 symmetry loss.

    Example: triplanenet preprocess photos/ --out data/mine && triplanenet conf-maps data/mine
    """
    from triplanenet.data.dataset import CONF_MAP_DIR, FaceDataset
    from triplanenet.losses.confnet import CONF_MAP_SIZE, save_conf_map

    if batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    if dataset.is_file():
        raise ConfigError(f"{dataset} is a file; conf maps are written into a dataset folder (unpack the zip first)")
    if resume and overwrite:
        raise ConfigError("--resume keeps the maps that are complete; it cannot be combined with --overwrite")
    torch_device = resolve_device(device)
    data = FaceDataset(dataset, resolution=CONF_MAP_SIZE)  # checks dataset.json and the image/label pairing
    stems = [Path(name).name for name in data.names]
    if len(set(stems)) != len(stems):
        raise ConfigError(f"{dataset}: two images share a file stem; conf maps are looked up by stem, rename one")
    folder = dataset / CONF_MAP_DIR
    with process_group(torch_device) as world:
        torch_device = world.device(torch_device)
        net = load_sigma_net(sigma_net, torch_device)
        # A map counts as there when it parses as a finite float32 256² array (a damaged one is recomputed).
        there: set[int] = set()
        if not overwrite:
            mine = {
                i for i, stem in shard(stems, world.rank, world.world_size) if valid_conf_map(folder / f"{stem}.npy")
            }
            there = set().union(*world.all_gather(mine))
        todo = [i for i in range(len(stems)) if i not in there]
        mine_todo = [i for _, i in shard(todo, world.rank, world.world_size)]
        failed: list[str] = []
        written = 0
        with job_progress(world, "conf maps", len(stems), len(there), verb="skipped") as (tracker, _):
            for round_index in range(tracker.rounds(-(-len(mine_todo) // batch_size))):
                chunk_todo = mine_todo[round_index * batch_size : (round_index + 1) * batch_size]
                chunk, images, failures = [], [], []
                for i in chunk_todo:
                    try:
                        images.append(data[i]["image"])  # an unreadable image skips only itself
                    except TriplaneNetError as exc:
                        failures.append(("", str(exc)))  # names the file
                        continue
                    chunk.append(i)
                if chunk:
                    sigma = net.predict_sigma(torch.stack(images).to(torch_device))
                    for i, s in zip(chunk, sigma, strict=True):
                        save_conf_map(folder / f"{stems[i]}.npy", s)
                    written += len(chunk)
                failed += [message for _, message in failures]
                tracker.report(len(chunk_todo), failures)
        counts = world.gather_to_main((written, len(failed)))
    data.close()
    if counts is None:
        return
    written, unreadable = sum(c[0] for c in counts), sum(c[1] for c in counts)
    console.print(
        f"wrote {written} confidence map(s) to [bold]{folder}[/] ({len(there)} already there"
        f"{f', {unreadable} image(s) unreadable' if unreadable else ''}); {throughput(tracker, world)}",
        highlight=False,
    )
    if unreadable:
        raise typer.Exit(code=1)


def valid_conf_map(path: Path) -> bool:
    """Whether ``path`` holds a complete map: a float32 (256, 256) ``.npy`` of finite values (read without pickle)."""
    import numpy as np

    from triplanenet.losses.confnet import CONF_MAP_SIZE

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return False
    return (
        array.dtype == np.float32 and array.shape == (CONF_MAP_SIZE, CONF_MAP_SIZE) and bool(np.isfinite(array).all())
    )
