"""The same-process side-by-side script's measurement and report logic (the official code itself is not in CI)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "official_side_by_side.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("official_side_by_side", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


side = _load_script()
CPU = torch.device("cpu")


def test_time_pair_keeps_measuring_one_side_when_the_other_runs_out_of_memory() -> None:
    calls = {"ours": 0}

    def ours() -> torch.Tensor:
        calls["ours"] += 1
        return torch.ones(2)

    def official() -> torch.Tensor:
        raise RuntimeError("CUDA out of memory. Tried to allocate 30.00 GiB")

    result = side.time_pair(ours, official, CPU, warmup=2, repeats=3, grad=False)
    times, _peak, output, failed = result["ours"]
    assert len(times) == 3 and failed is None and calls["ours"] == 5 and torch.equal(output, torch.ones(2))
    times, _peak, output, failed = result["official"]
    assert times == [] and output is None and failed == "out of memory"


def test_time_pair_grad_switch_reaches_the_timed_functions() -> None:
    seen: list[bool] = []
    side.time_pair(
        lambda: seen.append(torch.is_grad_enabled()),
        lambda: seen.append(torch.is_grad_enabled()),
        CPU,
        warmup=1,
        repeats=1,
        grad=True,
    )
    side.time_pair(lambda: seen.append(torch.is_grad_enabled()), lambda: None, CPU, warmup=1, repeats=1, grad=False)
    assert seen == [True, True, True, True, False, False]


def test_report_is_written_after_each_row_and_names_failures(tmp_path: Path) -> None:
    meta = {
        "device": "cpu",
        "device_name": "test CPU",
        "torch": torch.__version__,
        "threads": 1,
        "depth_samples_inversion": 96,
        "depth_samples_training": 48,
        "repeats": 3,
    }
    row = {
        "workload": "inversion",
        "mode": "bf16",
        "batch": 32,
        "ours_s": 0.5,
        "official_s": None,
        "speedup": None,
        "ours_images_per_s": 64.0,
        "official_images_per_s": None,
        "ours_peak_bytes": 2**30,
        "official_peak_bytes": 0,
        "ours_failed": None,
        "official_failed": "out of memory",
        "max_abs_diff": 0.02,
        "psnr_db": 51.234,
    }
    markdown = side.write_report(tmp_path, meta, [row])
    line = markdown.strip().splitlines()[-1]
    assert line == "| inversion | bf16 | 32 | 0.5000 | out of memory | – | 64.00 | – | 1024 | 0 | 0.02 | 51.2 |"
    assert json.loads((tmp_path / "side_by_side.json").read_text())["results"] == [row]
    assert (tmp_path / "side_by_side.md").read_text() == markdown


def test_failure_reasons_are_one_short_line() -> None:
    from triplanenet.bench import failure_reason

    assert failure_reason(RuntimeError("CUDA out of memory. Tried\nmore")) == "out of memory"
    reason = failure_reason(ValueError("bad shape\ntraceback details"))
    assert reason == "ValueError: bad shape"


GPU_MACHINE_LACKS = ("fastapi", "uvicorn", "multipart", "python_multipart", "starlette", "imageio_ffmpeg", "selenium")
"""Packages of ours that the lent GPU machine's image does not have (``/work/.library/device/KINDS.md``); the GPU
session (``benchmarks/gpu_session.sh``) runs there with the machine's own Python, so its code must import without
them."""


def test_gpu_session_code_imports_without_the_web_and_video_packages(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        f"BLOCKED = {set(GPU_MACHINE_LACKS)!r}\n"
        "class Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'{name} is not installed on the GPU machine')\n"
        "sys.meta_path.insert(0, Blocker())\n"
    )
    code = (
        "import importlib.util, sys\n"
        "import triplanenet.cli.main, triplanenet.bench\n"
        "from triplanenet.demo import load_default_model\n"
        "load_default_model('cpu')\n"
        f"spec = importlib.util.spec_from_file_location('side', {str(SCRIPT)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        f"spec = importlib.util.spec_from_file_location('v2', {str(SCRIPT.with_name('official_v2_parity.py'))!r})\n"
        "sys.modules['v2'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(sys.modules['v2'])\n"
        "try:\n"
        "    import fastapi\n"
        "except ImportError:\n"
        "    print('blocked ok')\n"
    )
    src = Path(__file__).resolve().parents[1] / "src"
    env = {"PYTHONPATH": f"{tmp_path}:{src}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "blocked ok"
