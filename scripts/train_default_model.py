"""Retrain the bundled default model from scratch, reproducibly (CPU is enough; see docs/default_model.md).

    python scripts/train_default_model.py all          # or one stage: world | generator | identity | encoder | export

Stages:
  world      render the procedural heads: 160 identities x 6 views (training) and 24 x 2 (held out), 128²
  generator  fit the small EG3D generator to the training world (auto-decoder, see train/fit_generator.py)
  identity   train the identity network on the training identities (train/identity_net.py)
  encoder    train TriPlaneNet with `triplanenet train` (paper losses, learned σ-net, EG3D synthetic samples)
  export     write src/triplanenet/assets/default/{model,identity,confnet}.safetensors + training_record.json
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
ASSETS = ROOT / "src" / "triplanenet" / "assets" / "default"
WORLD_TRAIN = CACHE / "world" / "train"
WORLD_HELDOUT = CACHE / "world" / "heldout"
GENERATOR = CACHE / "default" / "generator.safetensors"
IDENTITY = ASSETS / "identity.safetensors"
ENCODER_RUN = CACHE / "runs" / "default_encoder"
RECORD = CACHE / "default" / "record.json"

ENCODER_OVERRIDES = [
    "model=tiny",
    f"data={WORLD_TRAIN}",
    f"out={ENCODER_RUN}",
    f"generator={GENERATOR}",
    f"identity_network={IDENTITY}",
    "confidence=learned",
    "synthetic_samples=320",
    "batch_size=4",
    "lr_psp=1e-3",
    "lr_triplane=1e-3",
    "add_triplanenet=200",
    "stop_psp=800",
    "max_steps=1200",
    "val_fraction=0.1",
    "val_every=200",
    "save_every=200",
    "log_every=20",
    "image_every=200",
]


def _record(stage: str, values: dict) -> None:
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RECORD.read_text()) if RECORD.is_file() else {}
    data[stage] = {
        **values,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
    }
    RECORD.write_text(json.dumps(data, indent=2))


def stage_world() -> None:
    from triplanenet.synth.dataset import build_synth_dataset

    start = time.perf_counter()
    build_synth_dataset(WORLD_TRAIN, 160, 6, 128, seed=0)
    build_synth_dataset(WORLD_HELDOUT, 24, 2, 128, seed=1)
    _record(
        "world",
        {
            "train": "160 identities x 6 views, seed 0",
            "heldout": "24 x 2, seed 1",
            "seconds": time.perf_counter() - start,
        },
    )


def stage_generator(steps: int = 1500) -> None:
    from triplanenet.io.checkpoints import save_generator
    from triplanenet.synth.dataset import load_synth_world
    from triplanenet.train.fit_generator import FitConfig, fit_generator

    world = load_synth_world(WORLD_TRAIN)
    config = FitConfig(steps=steps, batch_size=6)
    start = time.perf_counter()
    generator, latents, history = fit_generator(world, config)
    seconds = time.perf_counter() - start
    save_generator(generator, GENERATOR, latent_avg=generator.w_avg)
    torch.save(latents, GENERATOR.with_suffix(".latents.pt"))
    first, last = history[0], history[-1]
    _record("generator", {"config": config.__dict__, "seconds": seconds, "first": first, "last": last})


def stage_identity(steps: int = 600) -> None:
    from triplanenet.synth.dataset import load_synth_world
    from triplanenet.train.identity_net import save_identity_network, train_identity_network, verification_scores

    world = load_synth_world(WORLD_TRAIN)
    heldout = load_synth_world(WORLD_HELDOUT)
    start = time.perf_counter()
    network = train_identity_network(world.images, world.identity, steps=steps)
    seconds = time.perf_counter() - start
    save_identity_network(network, IDENTITY)
    scores = verification_scores(network, heldout.images, heldout.identity)
    _record("identity", {"steps": steps, "seconds": seconds, "heldout_verification": scores})


def stage_encoder() -> None:
    from triplanenet.cli.train import run_training

    start = time.perf_counter()
    logs = run_training("paper", ENCODER_OVERRIDES, resume="auto", device_name="cpu")
    _record("encoder", {"overrides": ENCODER_OVERRIDES, "seconds": time.perf_counter() - start, "last": logs})


def _half(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ship floating weights as float16 (loaders cast back to float32); integers (BN counters) stay as they are."""
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    from triplanenet.io.atomic import atomic_path

    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def stage_export() -> None:
    from safetensors import safe_open

    from triplanenet.io.checkpoints import safe_torch_load
    from triplanenet.io.model_checkpoints import MODEL_FORMAT, load_triplanenet

    ASSETS.mkdir(parents=True, exist_ok=True)
    checkpoint = ENCODER_RUN / "checkpoints" / "last.pt"
    model = load_triplanenet(checkpoint)
    tensors = _half(model.state_dict())
    tensors["latent_avg"] = model.latent_avg.detach().float().contiguous()
    _write_safetensors(
        ASSETS / "model.safetensors", tensors, {"format": MODEL_FORMAT, "config": json.dumps(model.config.to_dict())}
    )
    state = safe_torch_load(checkpoint)
    if "confnet" in state:
        _write_safetensors(
            ASSETS / "confnet.safetensors",
            _half(state["confnet"]),
            {"format": "triplanenet-confnet", "config": json.dumps({"nf": 64, "zdim": 128})},
        )
    with safe_open(str(IDENTITY), framework="pt") as handle:
        metadata = handle.metadata()
        identity = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    _write_safetensors(IDENTITY, _half(identity), metadata)
    record = json.loads(RECORD.read_text())
    record["export"] = {name.name: name.stat().st_size for name in sorted(ASSETS.glob("*.safetensors"))}
    (ASSETS / "training_record.json").write_text(json.dumps(record, indent=2))


STAGES = {
    "world": stage_world,
    "generator": stage_generator,
    "identity": stage_identity,
    "encoder": stage_encoder,
    "export": stage_export,
}

if __name__ == "__main__":
    names = sys.argv[1:] or ["all"]
    for name in list(STAGES) if names == ["all"] else names:
        print(f"== {name}", flush=True)
        STAGES[name]()
