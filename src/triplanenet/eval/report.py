"""Evaluation reports: markdown table, CSVs, comparison-grid PNGs and matplotlib plots, all deterministic.

Files written by :func:`write_report` into the output folder:

* ``report.md``: the command, data, identity network, machine/threads and one row per method (means over images).
* ``metrics.csv``: the same means; ``per_image.csv``: one row per (method, image).
* ``comparison.png``: rows = images; columns = input, then each method's reconstruction (in ``--method`` order).
* ``novel_views.png``: for each image, a row of ground truth at the novel yaws (procedural world only) and one row
  per method; columns = the novel yaws in order.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from triplanenet.io.atomic import write_text_atomic

SUMMARY_COLUMNS: tuple[str, ...] = (
    "MSE",
    "LPIPS",
    "MS-SSIM",
    "ID",
    "ID novel",
    "novel MSE",
    "novel LPIPS",
    "depth error",
    "AD",
    "s/image",
)


def format_value(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, object]], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table; ``columns`` default to the keys of the first row (missing cells are '–')."""
    if not rows:
        return ""
    columns = list(columns or rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(c, float("nan"))) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[dict[str, object]]) -> str:
    """CSV of rows (union of keys, in first-seen order); floats with full precision (repr)."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def machine_line() -> str:
    return (
        f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )


def _tile(image: torch.Tensor) -> np.ndarray:
    from triplanenet.io.images import tensor_to_uint8

    return tensor_to_uint8(image)


def _stack_rows(rows: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    height, width = rows[0][0].shape[:2]
    columns = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            canvas[i * (height + gap) : i * (height + gap) + height, j * (width + gap) : j * (width + gap) + width] = (
                tile
            )
    return canvas


def write_grids(result, folder: Path) -> list[Path]:
    """``comparison.png`` and ``novel_views.png`` for an :class:`~triplanenet.eval.protocol.EvalResult`."""
    from triplanenet.io.images import save_png

    items = result.data.items
    size = result.methods[0].reconstructions.shape[-1] if result.methods else items[0].image.shape[-1]
    resize = lambda x: torch.nn.functional.interpolate(  # noqa: E731
        x[None].float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )[0]
    rows = [
        [_tile(resize(item.image))] + [_tile(m.reconstructions[i]) for m in result.methods]
        for i, item in enumerate(items)
    ]
    written = [folder / "comparison.png"]
    save_png(written[0], _stack_rows(rows))
    if result.methods and result.methods[0].novel.shape[1] > 0:
        novel_rows: list[list[np.ndarray]] = []
        for i in range(len(items)):
            if result.novel_truth is not None:
                novel_rows.append([_tile(v) for v in result.novel_truth[i]])
            novel_rows.extend([_tile(v) for v in m.novel[i]] for m in result.methods)
        written.append(folder / "novel_views.png")
        save_png(written[1], _stack_rows(novel_rows))
    return written


def write_report(result, folder: str | Path, command: str) -> dict[str, Path]:
    """Write report.md, metrics.csv, per_image.csv, comparison.png, novel_views.png; returns their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    means = [m.mean() for m in result.methods]
    per_image = [{"method": m.method, **row} for m in result.methods for row in m.rows]
    columns = ["method"] + [c for c in SUMMARY_COLUMNS if any(c in row for row in means)]
    id_columns = sorted({k for row in means for k in row if k.startswith("ID@")}, key=lambda k: float(k[3:]))
    options = result.options
    lines = [
        "# Evaluation report",
        "",
        f"Command: `{command}`",
        "",
        f"- data: {result.data.source}",
        f"- identity network: {result.identity_network}",
        f"- machine: {machine_line()}",
        f"- MSE / LPIPS / MS-SSIM at {options.metric_size}² on [-1, 1] images; novel yaws "
        f"{', '.join(f'{y:+.1f}' for y in options.novel_yaws)} rad (pitch 0); AD = mean distance from reference "
        f"surface to predicted surface in the face ellipsoid / inter-ocular distance (rigid landmark alignment, "
        f"our mesh at {options.mesh_resolution}³, σ level {options.mesh_level})",
        f"- method options: {options.method_options or 'defaults'}",
        f"- evaluation took {result.seconds:.1f} s",
        "",
        "## Means over images",
        "",
        markdown_table(means, columns),
    ]
    if id_columns:
        lines += ["## Identity at novel yaws (render vs input)", "", markdown_table(means, ["method", *id_columns])]
    lines += [
        "Files: `metrics.csv` (these means), `per_image.csv`, `comparison.png` (rows = images; columns = input, "
        + ", ".join(m.method for m in result.methods)
        + "), `novel_views.png` (per image: "
        + ("ground truth, then " if result.novel_truth is not None else "")
        + "one row per method; columns = novel yaws).",
        "",
    ]
    paths = {"report": out / "report.md", "metrics": out / "metrics.csv", "per_image": out / "per_image.csv"}
    write_text_atomic(paths["report"], "\n".join(lines))
    write_text_atomic(paths["metrics"], csv_text(means))
    write_text_atomic(paths["per_image"], csv_text(per_image))
    for path in write_grids(result, out):
        paths[path.stem] = path
    return paths


def save_plot(
    path: str | Path,
    x_labels: Sequence[str],
    series: dict[str, Sequence[float]],
    title: str,
    xlabel: str,
    kind: str = "line",
) -> Path:
    """A deterministic matplotlib PNG: one subplot per metric in ``series`` (values per x label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from triplanenet.io.atomic import atomic_path

    names = list(series)
    positions = np.arange(len(x_labels))
    if kind == "bar":  # horizontal bars, one row per label (long labels stay readable)
        size = (2.6 * len(names) + 2.8, 0.45 * len(x_labels) + 1.4)
    else:
        size = (3.2 * len(names), 3.0)
    figure, axes = plt.subplots(1, len(names), figsize=size, squeeze=False, sharey=kind == "bar")
    for index, (axis, name) in enumerate(zip(axes[0], names, strict=True)):
        values = np.asarray(series[name], dtype=float)
        if kind == "bar":
            bars = axis.barh(positions, values, color="#4477aa")
            axis.bar_label(bars, fmt="%.4f", fontsize=7, padding=2)
            low, high = min(0.0, float(np.nanmin(values))), max(0.0, float(np.nanmax(values)))
            span = max(high - low, 1e-12)
            axis.set_xlim(low - 0.3 * span * (low < 0), high + 0.3 * span)
            if index == 0:
                axis.set_yticks(positions, list(x_labels), fontsize=8)
                axis.invert_yaxis()
            else:
                axis.tick_params(labelleft=False)
        else:
            axis.plot(positions, values, marker="o", color="#4477aa")
            axis.set_xticks(positions, list(x_labels), fontsize=8)
            axis.set_xlabel(xlabel, fontsize=8)
        axis.set_title(name, fontsize=9)
        axis.tick_params(labelsize=8)
        axis.grid(alpha=0.3)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(figure)
    return Path(path)
