"""Collect real photos with official EG3D cameras from public repositories into one folder for
``benchmarks/real_cameras.py --folder``: a second check of the camera estimators, beside the reference pack's 12.

Sources (clone them yourself; this script reads local files and downloads nothing):

* ``git clone --depth 1 https://github.com/anantarb/triplanenet`` — TriPlaneNet's example photo and its camera
  (``dataset_preprocessing/ffhq/example_dataset/``: ``example.png`` + ``dataset.json``).
* ``git clone --depth 1 https://github.com/oneThousand1000/EG3D-projector`` — four 512² crops with their cameras
  (``eg3d/projector_test_data/*.png`` + ``*.npy``: 25 numbers each, FFHQ crops with their official labels and one
  real portrait).

    python benchmarks/collect_real_cameras.py --triplanenet triplanenet --projector EG3D-projector --out extra_cameras
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_cameras.py --folder extra_cameras

The photos keep their owners' licences; they are not part of this project.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np


def collect(triplanenet: Path | None, projector: Path | None, out: Path) -> list[str]:
    """Copy the photos into ``out`` with a ``dataset.json`` of their labels; return the file names."""
    labels: list[list] = []
    out.mkdir(parents=True, exist_ok=True)
    if triplanenet is not None:
        folder = triplanenet / "dataset_preprocessing" / "ffhq" / "example_dataset"
        for name, label in json.loads((folder / "dataset.json").read_text())["labels"]:
            target = f"tpn_{name}"
            shutil.copyfile(folder / name, out / target)
            labels.append([target, [float(v) for v in label]])
    if projector is not None:
        folder = projector / "eg3d" / "projector_test_data"
        for camera in sorted(folder.glob("*.npy")):
            image = camera.with_suffix(".png")
            if not image.is_file():
                continue
            values = np.load(camera, allow_pickle=False).reshape(-1)
            if values.shape != (25,) or not np.isfinite(values).all():
                raise SystemExit(f"{camera}: expected 25 finite numbers, got shape {values.shape}")
            target = f"projector_{image.name}"
            shutil.copyfile(image, out / target)
            labels.append([target, [float(v) for v in values]])
    (out / "dataset.json").write_text(json.dumps({"labels": labels}))
    return [name for name, _ in labels]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triplanenet", type=Path, default=None, help="clone of anantarb/triplanenet")
    parser.add_argument("--projector", type=Path, default=None, help="clone of oneThousand1000/EG3D-projector")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.triplanenet is None and args.projector is None:
        print("error: give --triplanenet and/or --projector", file=sys.stderr)
        return 2
    names = collect(args.triplanenet, args.projector, args.out)
    print(f"{len(names)} photos with cameras in {args.out}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
