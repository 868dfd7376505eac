"""Ablation runners (paper Sec. 4.3 / supplement): each trains small TriPlaneNet models through the library Trainer
API and evaluates them with :func:`triplanenet.eval.protocol.evaluate`, then writes a markdown table, a CSV and a
matplotlib plot.

* ``synthetic-samples``: the same run with N EG3D synthetic training samples for each N in ``counts`` (paper:
  0 / 10K / 50K / 100K / 150K on FFHQ; scaled to the CPU here, default 0 / 40 / 160 / 320).
* ``symmetry``: with the symmetry (mirror-view) prior and learnt σ vs without it (``confidence=none``,
  ``psp_losses.mirror=0``, ``triplane_losses.mirror=0``); each model is evaluated as full TriPlaneNet and as its
  first branch only (``w+-pred``), which is the paper's "first branch only" comparison.

Every run starts from the bundled default model's EG3D generator and identity network, on a procedural training world
rendered once into ``<out>/world`` (seed 0) and the held-out evaluation heads of :func:`synthetic_heads`; the training
settings are those of ``scripts/train_default_model.py`` scaled by :class:`AblationSettings` (all seeds fixed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from triplanenet.errors import ConfigError
from triplanenet.io.atomic import write_text_atomic

SYMMETRY_OFF: tuple[str, ...] = ("confidence=none", "psp_losses.mirror=0", "triplane_losses.mirror=0")
PLOT_METRICS: tuple[str, ...] = ("MSE", "LPIPS", "ID novel", "novel MSE")


@dataclass
class AblationSettings:
    """How big each ablation run is (defaults sized for a 2-core CPU: a few minutes per run)."""

    steps: int = 300
    """Training steps per run (the bundled default model: 5,500 + 3,000, docs/default_model.md)."""
    add_triplanenet: int = 60
    """Step at which the second branch starts."""
    batch_size: int = 4
    lr: float = 3e-3
    """Both branches (the default model's encoder learning rate, docs/default_model.md)."""
    world_identities: int = 40
    """Training-world identities (× ``world_views`` views each, 128², seed 0)."""
    world_views: int = 6
    heads: int = 6
    """Held-out evaluation heads."""
    mesh_ad: bool = False
    """Also compute AD (slower)."""
    seed: int = 0
    extra_overrides: list[str] = field(default_factory=list)
    """More ``key=value`` training overrides applied to every run."""

    def validate(self) -> None:
        if self.steps < 1 or not 0 <= self.add_triplanenet <= self.steps:
            raise ConfigError("ablation needs steps >= 1 and 0 <= add_triplanenet <= steps")
        if self.world_identities < 2 or self.world_views < 1 or self.heads < 1:
            raise ConfigError("ablation needs world_identities >= 2, world_views >= 1 and heads >= 1")


@dataclass
class AblationResult:
    out: Path
    rows: list[dict[str, float | str]]
    table: str
    seconds: float


def _prepare(out: Path, settings: AblationSettings) -> tuple[Path, Path, Path | None]:
    """Training world, the default model's generator as a file, and the bundled identity network path."""
    from triplanenet.bundled import default_assets_dir, load_default_model
    from triplanenet.io.checkpoints import save_generator
    from triplanenet.synth.dataset import build_synth_dataset

    world = build_synth_dataset(out / "world", settings.world_identities, settings.world_views, 128, seed=0)
    generator_path = out / "generator.safetensors"
    if not generator_path.is_file():
        model = load_default_model()
        save_generator(
            model.decoder, generator_path, latent_avg=model.latent_avg.reshape(-1, model.latent_avg.shape[-1])[0]
        )
    identity = default_assets_dir() / "identity.safetensors"
    return world, generator_path, identity if identity.is_file() else None


def base_overrides(out: Path, run: str, settings: AblationSettings) -> list[str]:
    """Training overrides of one run (the default model's recipe, scaled by ``settings``)."""
    world, generator, identity = _prepare(out, settings)
    overrides = [
        "model=tiny",  # the paper's v2 (the preset's version); -O triplanenet_version=1 for v1
        f"data={world}",
        f"out={out / 'runs' / run}",
        f"generator={generator}",
        "confidence=learned",
        f"batch_size={settings.batch_size}",
        f"lr_psp={settings.lr}",
        f"lr_triplane={settings.lr}",
        f"add_triplanenet={settings.add_triplanenet}",
        f"stop_psp={settings.steps}",
        f"max_steps={settings.steps}",
        "val_fraction=0.1",
        f"val_every={settings.steps}",
        f"save_every={settings.steps}",
        f"log_every={max(1, settings.steps // 10)}",
        f"image_every={settings.steps}",
        "val_batches=4",
        f"seed={settings.seed}",
    ]
    if identity is not None:
        overrides.append(f"identity_network={identity}")
    return overrides


def train_run(overrides: Sequence[str], log: Callable[[str], None] = print):
    """Train one model with the library API (no subprocess); returns the trained TriPlaneNet in eval mode."""
    from triplanenet.train.build import build_trainer
    from triplanenet.train.config import load_train_config

    trainer = build_trainer(load_train_config("paper", list(overrides)), torch.device("cpu"), log=log)
    trainer.fit()
    return trainer.model.eval()


def _evaluate(model, methods: Sequence[str], settings: AblationSettings):
    from triplanenet.eval.protocol import EvalOptions, evaluate, load_identity_metric, synthetic_heads
    from triplanenet.losses.lpips import LPIPS

    data, _ = synthetic_heads(settings.heads, model.decoder.config.img_resolution)
    try:
        lpips = LPIPS.from_file()
    except Exception:  # LPIPS weights not installed: the table simply has no LPIPS column
        lpips = None
    options = EvalOptions(mesh_ad=settings.mesh_ad, seed=settings.seed)
    return evaluate(model, methods, data, options, load_identity_metric(), lpips)


def _write(
    out: Path,
    name: str,
    title: str,
    rows: list[dict[str, float | str]],
    label: str,
    note: str,
    settings: AblationSettings,
    kind: str,
    seconds: float,
) -> str:
    from triplanenet.eval.report import SUMMARY_COLUMNS, csv_text, machine_line, markdown_table, save_plot

    columns = [label, "method"] + [c for c in SUMMARY_COLUMNS if any(c in r for r in rows)]
    table = markdown_table(rows, columns)
    text = "\n".join(
        [
            f"# Ablation: {title}",
            "",
            note,
            "",
            f"- settings: `{json.dumps(asdict(settings))}`",
            f"- machine: {machine_line()}; {seconds:.0f} s in all",
            "",
            table,
            f"Plot: `{name}.png`.",
            "",
        ]
    )
    write_text_atomic(out / f"{name}.md", text)
    write_text_atomic(out / f"{name}.csv", csv_text(rows))
    metrics = [m for m in PLOT_METRICS if all(m in r for r in rows)]
    labels = [f"{r[label]}" + ("" if kind == "line" else f" · {r['method']}") for r in rows]
    save_plot(out / f"{name}.png", labels, {m: [float(r[m]) for r in rows] for m in metrics}, title, label, kind)
    return table


def run_synthetic_samples_ablation(
    out: str | Path,
    counts: Sequence[int] = (0, 40, 160, 320),
    settings: AblationSettings | None = None,
    log: Callable[[str], None] = print,
) -> AblationResult:
    """Train one model per synthetic-sample count and evaluate each as full TriPlaneNet."""
    settings = settings or AblationSettings()
    settings.validate()
    if not counts or any(c < 0 for c in counts):
        raise ConfigError("synthetic-sample counts must be a non-empty list of numbers >= 0")
    folder = Path(out)
    started = time.perf_counter()
    rows: list[dict[str, float | str]] = []
    for count in sorted(set(counts)):
        log(f"synthetic samples {count}: training {settings.steps} steps")
        overrides = [
            *base_overrides(folder, f"synthetic_{count}", settings),
            f"synthetic_samples={count}",
            *settings.extra_overrides,
        ]
        model = train_run(overrides, log)
        mean = _evaluate(model, ["triplanenet"], settings).methods[0].mean()
        rows.append({"synthetic samples": count, **mean})
    seconds = time.perf_counter() - started
    note = (
        "Each row trains TriPlaneNet (tiny encoders, paper losses, learnt σ) on the procedural training world plus N "
        "EG3D synthetic samples (ψ = 1), then evaluates full TriPlaneNet on held-out procedural heads. The paper's "
        "counts (0 / 10K / 50K / 100K / 150K on FFHQ) are scaled down to what a CPU allows."
    )
    table = _write(
        folder,
        "synthetic_samples",
        "number of EG3D synthetic samples",
        rows,
        "synthetic samples",
        note,
        settings,
        "line",
        seconds,
    )
    return AblationResult(folder, rows, table, seconds)


def run_symmetry_ablation(
    out: str | Path,
    settings: AblationSettings | None = None,
    log: Callable[[str], None] = print,
) -> AblationResult:
    """With vs without the symmetry prior; each model evaluated as full TriPlaneNet and first branch only."""
    settings = settings or AblationSettings()
    settings.validate()
    folder = Path(out)
    started = time.perf_counter()
    rows: list[dict[str, float | str]] = []
    variants = {"with symmetry prior": [], "without symmetry prior": list(SYMMETRY_OFF)}
    for variant, extra in variants.items():
        run = "symmetry_on" if not extra else "symmetry_off"
        log(f"{variant}: training {settings.steps} steps")
        model = train_run([*base_overrides(folder, run, settings), *extra, *settings.extra_overrides], log)
        for method in _evaluate(model, ["triplanenet", "w+-pred"], settings).methods:
            mean = method.mean()
            mean["method"] = "full TriPlaneNet" if method.method == "triplanenet" else "first branch only (w+-pred)"
            rows.append({"model": variant, **mean})
    seconds = time.perf_counter() - started
    note = (
        "Two TriPlaneNet models trained identically except for the symmetry prior (mirror-view loss with learnt σ "
        f"vs `{' '.join(SYMMETRY_OFF)}`); each is evaluated with both branches and with the first branch only."
    )
    table = _write(
        folder, "symmetry", "symmetry prior and first-branch-only", rows, "model", note, settings, "bar", seconds
    )
    return AblationResult(folder, rows, table, seconds)
