"""Retrain the bundled default model from scratch, reproducibly (CPU is enough; see docs/default_model.md).

    python scripts/train_default_model.py all    # or stages: world generator identity encoder refine widen sigma export
                                                 # demo

Stages (in this order; each is resumable or cheap to rerun):
  world      render the procedural heads: 480 identities x 4 views (training) and 24 x 2 (held out), 128²
  generator  fit the small EG3D generator to the training world (auto-decoder, see train/fit_generator.py)
  identity   train the identity network on the training identities (train/identity_net.py)
  encoder    train TriPlaneNet with `triplanenet train` (paper losses, learned σ-net, EG3D synthetic samples)
  refine     continue it: first branch frozen, the second branch with an L2 pixel term x4 and a falling learning rate
  widen      grow the second branch to twice its width (same output) and train it on with the refine losses
  sigma      fit the compact σ-net (eq. 4) on the trained model's mirror residuals -> confnet.safetensors
  export     write src/triplanenet/assets/default/{model,identity}.safetensors + training_record.json
  demo       `triplanenet demo --heads 8` table into the record, and the README picture docs/images/demo_summary.png
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
# Each finished stage's small output is committed here, so that a later stage can run on a fresh machine (the world
# is re-rendered deterministically in a few minutes; the generator fit takes hours).
STAGES_DIR = ROOT / "training" / "default_model"
GENERATOR = STAGES_DIR / "generator.safetensors"
IDENTITY = STAGES_DIR / "identity.safetensors"
RECORD = STAGES_DIR / "record.json"
GENERATOR_STATE = CACHE / "default" / "generator.state.pt"
ENCODER_RUN = CACHE / "runs" / "default_encoder"
REFINE_RUN = CACHE / "runs" / "default_refine"
WIDEN_RUN = CACHE / "runs" / "default_widen"
ANNEAL_RUN = CACHE / "runs" / "default_anneal"
FOCUS_RUN = CACHE / "runs" / "default_focus"
FINAL_CHECKPOINT = FOCUS_RUN / "checkpoints" / "last.pt"  # the trained model that sigma and export read
README_PICTURE = ROOT / "docs" / "images" / "demo_summary.png"
README_PICTURE_LIMIT = 300_000  # bytes

ENCODER_STEPS = 5500
ENCODER_OVERRIDES = [
    "model=compact",
    f"data={WORLD_TRAIN}",
    f"out={ENCODER_RUN}",
    f"generator={GENERATOR}",
    f"identity_network={IDENTITY}",
    "confidence=learned",
    # A narrow σ-net (0.6 M parameters instead of unsup3d's 7.7 M): ~0.08 s less per step on 2 cores, small checkpoints.
    "confnet_nf=16",
    "confnet_zdim=64",
    "synthetic_samples=960",
    "batch_size=4",
    # lr 3e-3: on the fitted generator it reached in 100 steps the validation MSE that 1e-3 needed ~170 steps for
    # (scripts/encoder_fit_probe.py, docs/default_model.md); 1e-2 stalled. Sized to finish in one session (~2 h).
    "lr_psp=3e-3",
    "lr_triplane=3e-3",
    "add_triplanenet=500",
    "stop_psp=3000",
    f"max_steps={ENCODER_STEPS}",
    "val_fraction=0.05",
    "val_every=500",
    "save_every=250",
    "log_every=50",
    "image_every=500",
]

# The second branch's stage of its own: its MSE fell only to ~70 % of the first branch's with the paper's smooth-L1
# pixel term (about half an L2), which LPIPS and the mirror terms outweigh. From the encoder run's last step, an L2
# pixel term of weight 4 lowered the validation MSE from 0.0054 to 0.0048 in 250 steps, where the unchanged losses
# gave 0.0055 (docs/default_model.md, "Second-branch stage"); the learning rates then fall along a half cosine to a
# tenth.
REFINE_STEPS = 3000
REFINE_OVERRIDES = [
    *(item for item in ENCODER_OVERRIDES if not item.startswith(("out=", "max_steps="))),
    f"out={REFINE_RUN}",
    f"max_steps={ENCODER_STEPS + REFINE_STEPS}",
    "triplane_losses.pixel=l2",
    "triplane_losses.pixel_weight=4",
    f"lr_decay_start={ENCODER_STEPS}",
    "lr_decay_final=0.1",
]

REFINED_CHECKPOINT = REFINE_RUN / "checkpoints" / f"step_{ENCODER_STEPS + REFINE_STEPS:08d}.pt"

# The second branch, twice as wide (1.14 M -> 4.47 M parameters), grown from the refined one without changing its
# output (encoders/widen.py), then trained on its own: the narrow branch had stopped improving (validation MSE
# 0.00402 -> 0.00395 in 1,000 more steps at a constant 3e-4, docs/default_model.md). A new step count from 0; the
# learning rate restarts at 3e-3 and falls along a half cosine to a tenth.
WIDEN_STEPS = 5500
_REPLACED_BY_WIDEN = ("out=", "max_steps=", "lr_decay_start=", "add_triplanenet=", "stop_psp=")
WIDEN_OVERRIDES = [
    *(item for item in REFINE_OVERRIDES if not item.startswith(_REPLACED_BY_WIDEN)),
    f"out={WIDEN_RUN}",
    f"init_checkpoint={REFINED_CHECKPOINT}",
    "triplane_width=2",
    "add_triplanenet=0",
    "stop_psp=0",
    f"max_steps={WIDEN_STEPS}",
    "lr_decay_start=0",
]

# The widen stage ended at a tenth of its rate (3e-4) on a plateau (validation 0.00343 -> 0.00342 over its last 500
# steps). Continuing its last step (optimizer state kept, step count going on) with the rate falling along a half
# cosine from there to a hundredth (3e-4 -> 3e-5) lets the small batch's noise settle.
ANNEAL_STEPS = 1500
_REPLACED_BY_ANNEAL = ("out=", "max_steps=", "lr_decay_start=", "lr_psp=", "lr_triplane=", "init_checkpoint=")
ANNEAL_OVERRIDES = [
    *(item for item in WIDEN_OVERRIDES if not item.startswith(_REPLACED_BY_ANNEAL)),
    f"out={ANNEAL_RUN}",
    "lr_psp=3e-4",
    "lr_triplane=3e-4",
    f"max_steps={WIDEN_STEPS + ANNEAL_STEPS}",
    f"lr_decay_start={WIDEN_STEPS}",
]


# After the anneal, the second branch's MSE on the demo's held-out heads was 50.5 % of the first branch's (the
# issue asks for at most 50 %), with LPIPS and ID far inside their targets. Continuing the anneal's last step with
# the second branch's L2 pixel term raised from 4 to 16 (the one loss weight that had moved the validation MSE:
# 0.00402 -> 0.00391 in a 250-step probe from the refine stage, docs/default_model.md), the rate falling from
# 1.5e-4 to 1.5e-5 along a half cosine, trades a little LPIPS for MSE.
FOCUS_STEPS = 1000
_REPLACED_BY_FOCUS = (*_REPLACED_BY_ANNEAL, "val_every=", "triplane_losses.pixel_weight=")
FOCUS_OVERRIDES = [
    *(item for item in ANNEAL_OVERRIDES if not item.startswith(_REPLACED_BY_FOCUS)),
    f"out={FOCUS_RUN}",
    "val_every=250",
    "triplane_losses.pixel_weight=16",
    "lr_psp=1.5e-4",
    "lr_triplane=1.5e-4",
    f"max_steps={WIDEN_STEPS + ANNEAL_STEPS + FOCUS_STEPS}",
    f"lr_decay_start={WIDEN_STEPS + ANNEAL_STEPS}",
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
    build_synth_dataset(WORLD_TRAIN, 480, 4, 128, seed=0)
    build_synth_dataset(WORLD_HELDOUT, 24, 2, 128, seed=1)
    if time.perf_counter() - start < 1.0:
        print("the world was already rendered with these settings (kept; its record is the first render's)")
        return
    _record(
        "world",
        {
            "train": "480 identities x 4 views, seed 0",
            "heldout": "24 x 2, seed 1",
            "seconds": time.perf_counter() - start,
        },
    )


def stage_generator(steps: int = 5000) -> None:
    from triplanenet.io.checkpoints import save_generator
    from triplanenet.synth.dataset import load_synth_world
    from triplanenet.train.fit_generator import FitConfig, fit_generator

    world = load_synth_world(WORLD_TRAIN)
    # lr 1e-2 (not the default 1.5e-3): on 8 identities x 4 views it reached after 150 steps the loss that 1.5e-3
    # reached after 300 (docs/default_model.md, "Generator learning rate").
    config = FitConfig(steps=steps, batch_size=8, lr=1e-2, latent_init="params", latent_noise=0.15, lpips_weight=0.5)
    start = time.perf_counter()
    # Resumable: a killed run continues from the last saved state (every 250 steps) when the stage is rerun.
    generator, _, history = fit_generator(world, config, state_path=GENERATOR_STATE)
    seconds = time.perf_counter() - start
    save_generator(generator, GENERATOR, latent_avg=generator.w_avg)
    first, last = history[0], history[-1]
    # The loss curve every 250 steps (mean of the 50 steps before), for docs/default_model.md.
    curve = [
        {key: sum(h[key] for h in history[end - 50 : end]) / 50 for key in last}
        for end in range(250, len(history) + 1, 250)
    ]
    _record(
        "generator",
        {"config": config.__dict__, "seconds_this_run": seconds, "first": first, "last": last, "curve": curve},
    )


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


def _train_stage(stage: str, run: Path, overrides: list[str], start_from: Path | None = None) -> None:
    """Run ``triplanenet train`` into ``run`` (resuming it when it holds checkpoints, else continuing from
    ``start_from`` when given) and record its overrides, wall times and validation curve under ``stage``."""
    from triplanenet.cli.train import run_training

    has_checkpoints = any((run / "checkpoints").glob("*.pt"))
    if start_from is not None and not has_checkpoints and not start_from.is_file():
        raise SystemExit(f"{start_from} is missing: run the stage before {stage} first")
    resume = "auto" if has_checkpoints or start_from is None else str(start_from)
    # Wall time over every run of the stage (an interrupted run adds its part, then resumes from its checkpoint).
    clock = run / "stage_seconds.json"
    start = time.perf_counter()
    try:
        logs = run_training("paper", overrides, resume=resume, device_name="cpu")
    finally:
        clock.parent.mkdir(parents=True, exist_ok=True)
        runs = [*(json.loads(clock.read_text()) if clock.is_file() else []), round(time.perf_counter() - start, 1)]
        clock.write_text(json.dumps(runs))
    curve = json.loads((run / "validation.json").read_text())
    _record(
        stage,
        {"overrides": overrides, "seconds_per_run": runs, "seconds": sum(runs), "last": logs, "validation": curve},
    )


def stage_encoder() -> None:
    _train_stage("encoder", ENCODER_RUN, ENCODER_OVERRIDES)


def stage_refine() -> None:
    """Continue the encoder run's last step with the first branch frozen and the second branch's pixel term raised
    (see REFINE_OVERRIDES); its validation curve continues the encoder's."""
    _train_stage("refine", REFINE_RUN, REFINE_OVERRIDES, ENCODER_RUN / "checkpoints" / f"step_{ENCODER_STEPS:08d}.pt")


def stage_widen() -> None:
    """Grow the refined second branch to twice its width (same output) and train it on (see WIDEN_OVERRIDES)."""
    if not REFINED_CHECKPOINT.is_file():
        raise SystemExit(f"{REFINED_CHECKPOINT} is missing: run the refine stage first")
    _train_stage("widen", WIDEN_RUN, WIDEN_OVERRIDES)


def stage_anneal() -> None:
    """Continue the widen run's last step at a falling learning rate (see ANNEAL_OVERRIDES)."""
    _train_stage("anneal", ANNEAL_RUN, ANNEAL_OVERRIDES, WIDEN_RUN / "checkpoints" / f"step_{WIDEN_STEPS:08d}.pt")


def stage_focus() -> None:
    """Continue the anneal's last step with a heavier second-branch pixel term (see FOCUS_OVERRIDES)."""
    start = ANNEAL_RUN / "checkpoints" / f"step_{WIDEN_STEPS + ANNEAL_STEPS:08d}.pt"
    _train_stage("focus", FOCUS_RUN, FOCUS_OVERRIDES, start)


def _half(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ship floating weights as float16 (loaders cast back to float32); integers (BN counters) stay as they are."""
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    from triplanenet.io.safetensors_files import write_safetensors

    write_safetensors(path, tensors, metadata)


def stage_export() -> None:
    from triplanenet.io.model_checkpoints import MODEL_FORMAT, load_triplanenet
    from triplanenet.io.safetensors_files import read_safetensors
    from triplanenet.train.identity_net import IDENTITY_FORMAT

    ASSETS.mkdir(parents=True, exist_ok=True)
    model = load_triplanenet(FINAL_CHECKPOINT)
    tensors = _half(model.state_dict())
    tensors["latent_avg"] = model.latent_avg.detach().float().contiguous()
    _write_safetensors(
        ASSETS / "model.safetensors", tensors, {"format": MODEL_FORMAT, "config": json.dumps(model.config.to_dict())}
    )
    identity, metadata = read_safetensors(IDENTITY, IDENTITY_FORMAT, "identity network", "run the identity stage")
    _write_safetensors(ASSETS / "identity.safetensors", _half(identity), metadata)
    _record("export", {"bytes": {name.name: name.stat().st_size for name in sorted(ASSETS.glob("*.safetensors"))}})
    (ASSETS / "training_record.json").write_text(RECORD.read_text())


def demo_table_and_picture(model_path: Path | None = None, picture: Path = README_PICTURE) -> dict:
    """Run ``triplanenet demo --heads 8`` (the docs' protocol) on the bundled model (or ``model_path``), and write
    the README's picture: the summary sheet of its first 4 heads as a 256-colour PNG under 300 KB.
    Returns the demo's metrics table and timing, for the record."""
    import tempfile

    import numpy as np
    from PIL import Image

    from triplanenet.demo import run_demo
    from triplanenet.io.atomic import atomic_path

    with tempfile.TemporaryDirectory() as tmp:
        result = run_demo(Path(tmp) / "heads8", heads=8, model_path=model_path)
        shown = run_demo(Path(tmp) / "heads4", heads=4, model_path=model_path)
        sheet = Image.open(shown.out / "summary.png").convert("RGB")
        small = sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        with atomic_path(picture) as staged:  # an over-size picture is removed, never replaces the old one
            small.save(staged, optimize=True)
            size = staged.stat().st_size
            if size > README_PICTURE_LIMIT:
                raise SystemExit(f"the README picture would be {size} bytes (limit {README_PICTURE_LIMIT})")
        error = np.abs(np.asarray(small.convert("RGB"), dtype=np.int16) - np.asarray(sheet, dtype=np.int16))
    return {
        "heads8": result.table,
        "heads8_seconds": result.seconds,
        "picture": {"path": picture.name, "bytes": size, "max_abs_error": int(error.max())},
    }


def stage_demo() -> None:
    """Measure the exported model with the docs' protocol and write the README picture (after export)."""
    record = json.loads(RECORD.read_text())
    record["demo"] = demo_table_and_picture()
    RECORD.write_text(json.dumps(record, indent=2))
    (ASSETS / "training_record.json").write_text(json.dumps(record, indent=2))


STAGES = {
    "world": stage_world,
    "generator": stage_generator,
    "identity": stage_identity,
    "encoder": stage_encoder,
    "refine": stage_refine,
    "widen": stage_widen,
    "anneal": stage_anneal,
    "focus": stage_focus,
    "export": stage_export,
    "demo": stage_demo,
}


def stage_sigma(steps: int = 400) -> None:
    """A compact σ-net (ConfNet nf 16) trained with eq. 4 on the mirror residuals of the trained default model.

    The encoder run learns a σ-net of the same width alongside the encoders, but against residuals that kept changing
    while the encoders trained; the shipped one is fitted afresh, with the same likelihood, to the residuals of the
    final model (the previous recipe's run learnt a full-width nf-64 σ-net, which this stage also replaced).
    """
    import torch.nn.functional as F

    from triplanenet.io.model_checkpoints import load_triplanenet
    from triplanenet.losses.confnet import CONFNET_INPUT_SIZE, ConfNet
    from triplanenet.losses.symmetry import laplacian_nll
    from triplanenet.synth.dataset import load_synth_world

    world = load_synth_world(WORLD_TRAIN)
    model = load_triplanenet(FINAL_CHECKPOINT).eval()
    size = model.config.input_resolution
    x = model.pool_to_input(world.images[::2])
    cameras = world.cameras[::2]
    with torch.no_grad():
        rendered = []
        for start in range(0, len(x), 16):
            out = model(
                x[start : start + 16],
                cameras[start : start + 16],
                target_camera="mirror",
                deterministic=True,
            )
            rendered.append(out.image_target)
    y_mirror = torch.cat(rendered)
    x_mirror = torch.flip(x, dims=(-1,))
    torch.manual_seed(0)
    sigma_net = ConfNet(nf=16, zdim=64)
    optimizer = torch.optim.Adam(sigma_net.parameters(), lr=1e-3)
    rng = torch.Generator().manual_seed(0)
    start_time = time.perf_counter()
    history = []
    for _ in range(steps):
        index = torch.randint(len(x_mirror), (16,), generator=rng)
        small = F.interpolate(x_mirror[index], size=(CONFNET_INPUT_SIZE,) * 2, mode="bilinear", align_corners=False)
        sigma = F.interpolate(sigma_net(small)[0][:, :1], size=(size, size), mode="bilinear", align_corners=False)
        loss = laplacian_nll(x_mirror[index], y_mirror[index], sigma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    _write_safetensors(
        ASSETS / "confnet.safetensors",
        _half(sigma_net.state_dict()),
        {"format": "triplanenet-confnet", "config": json.dumps({"nf": 16, "zdim": 64})},
    )
    _record(
        "sigma",
        {
            "steps": steps,
            "seconds": time.perf_counter() - start_time,
            "nll_first": history[0],
            "nll_last": sum(history[-20:]) / 20,
        },
    )


STAGES["sigma"] = stage_sigma

ORDER = ["world", "generator", "identity", "encoder", "refine", "widen", "anneal", "focus", "sigma", "export", "demo"]

if __name__ == "__main__":
    from triplanenet.perf import tune_cpu_allocator

    tune_cpu_allocator()  # as the triplanenet command does (measured before this existed; see docs/default_model.md)
    names = sys.argv[1:] or ["all"]
    for name in ORDER if names == ["all"] else names:
        print(f"== {name}", flush=True)
        STAGES[name]()
