"""Cameras of real photos vs the official EG3D preprocessing: per-photo table, MAEs, seconds per photo.

Runs ``triplanenet.preprocess.preprocess_face`` (MTCNN → EG3D alignment → pose) on the reference pack's
``real_cameras/`` photos and compares each estimated label with the official one from ``dataset.json``:
yaw = atan2(o_x, o_z), pitch = asin(o_y / |o|) (> 0: camera above the face), roll about the viewing axis
relative to the roll-free look-at camera, and the geodesic angle between the two cam2world rotations.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_cameras.py                 # --pose 3ddfa (default)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_cameras.py --pose mesh
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_cameras.py --pose mtcnn
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_cameras.py --loo      # mesh: leave-one-out of the pitch offset
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_cameras.py --folder DIR   # any folder with a dataset.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REFERENCE = Path(os.environ.get("TRIPLANENET_REFERENCE", Path(__file__).resolve().parents[2] / "shared" / "reference"))


@dataclass(frozen=True)
class CameraAngles:
    """Yaw, pitch, roll (degrees) of a label (conventions in the module docstring)."""

    yaw: float
    pitch: float
    roll: float


def label_angles(label: torch.Tensor) -> CameraAngles:
    """Yaw/pitch/roll in degrees of a 25-number label."""
    from triplanenet.preprocess.pose import _camera_roll

    label = torch.as_tensor(label, dtype=torch.float64)
    o = label[[3, 7, 11]]
    yaw = math.atan2(float(o[0]), float(o[2]))
    pitch = math.asin(float(o[1] / torch.linalg.vector_norm(o)))
    return CameraAngles(math.degrees(yaw), math.degrees(pitch), math.degrees(_camera_roll(label.float())))


def rotation_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Geodesic angle (degrees) between the cam2world rotations of two labels."""
    ra = torch.as_tensor(a, dtype=torch.float64)[:16].reshape(4, 4)[:3, :3]
    rb = torch.as_tensor(b, dtype=torch.float64)[:16].reshape(4, 4)[:3, :3]
    cos = ((ra.T @ rb).trace() - 1) / 2
    return math.degrees(math.acos(float(cos.clamp(-1.0, 1.0))))


def official_labels(folder: Path) -> dict[str, torch.Tensor]:
    """``{file name: label}`` from the pack's ``dataset.json``."""
    data = json.loads((folder / "dataset.json").read_text())
    return {name: torch.tensor(values, dtype=torch.float64) for name, values in data["labels"]}


def _natural_key(name: str) -> list[int | str]:
    """Sort key that orders ``goae_2`` before ``goae_11``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def evaluate(folder: Path, pose: str, pitch_offset: float | None = None) -> list[dict[str, float | str]]:
    """One row per photo: estimated and official angles, errors, seconds."""
    from triplanenet.preprocess import preprocess_face
    from triplanenet.preprocess.mtcnn import load_mtcnn

    model = load_mtcnn()
    rows: list[dict[str, float | str]] = []
    for name, official in sorted(official_labels(folder).items(), key=lambda kv: _natural_key(kv[0])):
        image = np.asarray(Image.open(folder / name).convert("RGB"))
        start = time.perf_counter()
        kwargs = {} if pitch_offset is None else {"pitch_offset": pitch_offset}
        result = preprocess_face(image, model=model, pose=pose, **kwargs)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        ours, ref = label_angles(result.label), label_angles(official)
        rows.append(
            {
                "photo": name,
                "yaw": ours.yaw,
                "yaw_ref": ref.yaw,
                "pitch": ours.pitch,
                "pitch_ref": ref.pitch,
                "roll": ours.roll,
                "roll_ref": ref.roll,
                "rot_err": rotation_error(result.label, official),
                "seconds": seconds,
            }
        )
    return rows


def summary(rows: list[dict[str, float | str]]) -> dict[str, float]:
    """MAEs (degrees) and mean seconds per photo."""

    def err(key: str) -> np.ndarray:
        return np.array([abs(float(r[key]) - float(r[f"{key}_ref"])) for r in rows])

    return {
        "yaw_mae": float(err("yaw").mean()),
        "pitch_mae": float(err("pitch").mean()),
        "pitch_max": float(err("pitch").max()),
        "roll_mae": float(err("roll").mean()),
        "rotation_mae": float(np.mean([float(r["rot_err"]) for r in rows])),
        "seconds_per_photo": float(np.mean([float(r["seconds"]) for r in rows[1:]] or [0.0])),
    }


def print_table(rows: list[dict[str, float | str]]) -> None:
    """Markdown table of the rows and their MAEs."""
    print("| photo | yaw ours / official (err) | pitch ours / official (err) | roll ours / official (err) | rot. err |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = []
        for key in ("yaw", "pitch", "roll"):
            ours, ref = float(r[key]), float(r[f"{key}_ref"])
            cells.append(f"{ours:+.1f} / {ref:+.1f} ({abs(ours - ref):.1f})")
        print(f"| {r['photo']} | " + " | ".join(cells) + f" | {float(r['rot_err']):.1f} |")
    s = summary(rows)
    print(
        f"\nMAE (degrees): yaw {s['yaw_mae']:.2f}, pitch {s['pitch_mae']:.2f} (max {s['pitch_max']:.2f}), "
        f"roll {s['roll_mae']:.2f}, rotation {s['rotation_mae']:.2f}; "
        f"{s['seconds_per_photo']:.3f} s/photo (detect + align + pose, one thread, first photo excluded)"
    )


def leave_one_out(folder: Path, grid: np.ndarray) -> None:
    """Calibrate the pitch offset on 11 photos (min rotation MAE over ``grid``), test on the 12th; print MAEs."""
    per_offset = {float(g): evaluate(folder, "mesh", pitch_offset=float(g)) for g in grid}
    names = [str(r["photo"]) for r in next(iter(per_offset.values()))]
    held: list[dict[str, float | str]] = []
    chosen: list[float] = []
    for k in range(len(names)):
        best = min(
            per_offset,
            key=lambda g: np.mean([float(r["rot_err"]) for i, r in enumerate(per_offset[g]) if i != k]),
        )
        chosen.append(best)
        held.append(per_offset[best][k])
    s = summary(held)
    print(f"pitch offsets chosen per fold (rad): {sorted(set(chosen))}")
    print(
        f"leave-one-out MAE (degrees): yaw {s['yaw_mae']:.2f}, pitch {s['pitch_mae']:.2f} (max {s['pitch_max']:.2f}), "
        f"roll {s['roll_mae']:.2f}, rotation {s['rotation_mae']:.2f}"
    )
    for g, rows in per_offset.items():
        t = summary(rows)
        print(f"  offset {g:+.3f}: yaw {t['yaw_mae']:.2f} pitch {t['pitch_mae']:.2f} rotation {t['rotation_mae']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pose", default="3ddfa", choices=("3ddfa", "mesh", "mtcnn"))
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="reference pack (holds real_cameras/)")
    parser.add_argument("--folder", type=Path, default=None, help="photos + dataset.json (default: the pack's)")
    parser.add_argument("--loo", action="store_true", help="mesh: leave-one-out calibration of the pitch offset")
    parser.add_argument("--pitch-offset", type=float, default=None, help="mesh: override PITCH_OFFSET")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = args.folder or args.reference / "real_cameras"
    if not (folder / "dataset.json").is_file():
        print(f"error: {folder}/dataset.json not found (set TRIPLANENET_REFERENCE)", file=sys.stderr)
        return 2
    if args.loo:
        leave_one_out(folder, np.round(np.arange(-0.10, 0.021, 0.01), 3))
        return 0
    print_table(evaluate(folder, args.pose, args.pitch_offset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
