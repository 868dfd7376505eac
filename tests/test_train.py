"""The training loop on the tiny model: losses fall, resume is bit-exact, Ctrl-C saves, DDP with gloo."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from triplanenet.eg3d.camera import camera_label
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.io.model_checkpoints import load_triplanenet
from triplanenet.train.build import build_criteria, build_datasets, build_generator, build_model
from triplanenet.train.config import load_train_config
from triplanenet.train.synthetic import generate_synthetic_dataset
from triplanenet.train.trainer import DistributedContext, Trainer, TrainingError

# LPIPS/ID need weight files; the loop itself is what these tests exercise.
NO_PERCEPTUAL = [
    "psp_losses.lpips_weight=0",
    "psp_losses.mirror_lpips_weight=0",
    "triplane_losses.lpips_weight=0",
    "triplane_losses.mirror_lpips_weight=0",
    "psp_losses.id_weight=0",
    "psp_losses.mirror_id_weight=0",
    "triplane_losses.id_weight=0",
    "triplane_losses.mirror_id_weight=0",
]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 images of a random tiny EG3D generator at varied poses, in the official layout."""
    torch.manual_seed(123)
    generator = TriPlaneGenerator(GeneratorConfig.tiny()).eval()
    yaws = torch.linspace(-0.5, 0.5, 6)
    cameras = camera_label(yaws, torch.zeros(6))
    return generate_synthetic_dataset(generator, cameras, 24, tmp_path_factory.mktemp("data"), seed=5)


def _config(dataset_dir: Path, out: Path, *extra: str):
    return load_train_config(
        "tiny", [f"data={dataset_dir}", f"out={out}", "max_steps=12", "add_triplanenet=4", *NO_PERCEPTUAL, *extra]
    )


def _trainer(config, context: DistributedContext | None = None) -> Trainer:
    device = torch.device("cpu")
    generator = build_generator(config, device)
    model = build_model(config, generator)
    train_set, val_set = build_datasets(config, model)
    criteria = build_criteria(config, device, log=lambda _m: None)
    return Trainer(config, model, train_set, val_set, criteria, device, context, log=lambda _m: None)


def test_losses_fall_and_checkpoints_are_written(dataset_dir: Path, tmp_path: Path) -> None:
    config = _config(dataset_dir, tmp_path / "run", "max_steps=40", "val_every=20", "save_every=20")
    trainer = _trainer(config)
    history: list[dict[str, float]] = []
    trainer.fit(on_step=lambda _step, logs: history.append(logs))
    first = sum(h["psp/l2"] for h in history[:5]) / 5
    last = sum(h["psp/l2"] for h in history[-5:]) / 5
    assert last < first
    assert "triplane/smooth_l1" in history[-1] and "psp/symmetry" in history[-1]
    names = {p.name for p in (tmp_path / "run" / "checkpoints").iterdir()}
    assert {"last.pt", "best.pt", "step_00000020.pt", "step_00000040.pt"} <= names
    assert json.loads((tmp_path / "run" / "config.json").read_text())["max_steps"] == 40
    assert list((tmp_path / "run" / "logs").glob("events.out.tfevents.*"))
    model = load_triplanenet(tmp_path / "run" / "checkpoints" / "last.pt")
    torch.testing.assert_close(
        model.state_dict()["psp_encoder.latlayer1.weight"], trainer.model.state_dict()["psp_encoder.latlayer1.weight"]
    )


def test_resume_continues_bit_for_bit(dataset_dir: Path, tmp_path: Path) -> None:
    config = _config(dataset_dir, tmp_path / "a", "save_every=6", "confidence=learned")
    straight: list[dict[str, float]] = []
    _trainer(config).fit(on_step=lambda _s, logs: straight.append(logs))
    resumed_config = _config(dataset_dir, tmp_path / "b", "save_every=6", "confidence=learned")
    trainer = _trainer(resumed_config)
    trainer.load_checkpoint(tmp_path / "a" / "checkpoints" / "step_00000006.pt")
    assert trainer.step == 6
    resumed: list[dict[str, float]] = []
    trainer.fit(on_step=lambda _s, logs: resumed.append(logs))
    assert resumed == straight[6:]


def test_ctrl_c_saves_a_checkpoint_to_resume_from(dataset_dir: Path, tmp_path: Path) -> None:
    config = _config(dataset_dir, tmp_path / "run")
    trainer = _trainer(config)

    def interrupt(step: int, _logs: dict[str, float]) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.fit(on_step=interrupt)
    again = _trainer(config)
    again.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert again.step == 5
    assert not list((tmp_path / "run" / "checkpoints").glob(".*")), "temporary files left behind"


def test_non_finite_loss_stops_with_a_clear_error(dataset_dir: Path, tmp_path: Path) -> None:
    trainer = _trainer(_config(dataset_dir, tmp_path / "run"))
    with torch.no_grad():
        trainer.model.psp_encoder.latlayer1.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="became nan"):
        trainer.fit()


def test_incompatible_checkpoint_is_refused(dataset_dir: Path, tmp_path: Path) -> None:
    trainer = _trainer(_config(dataset_dir, tmp_path / "run"))
    bogus = tmp_path / "bogus.pt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(TrainingError, match="not a triplanenet training checkpoint"):
        trainer.load_checkpoint(bogus)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, dataset_dir: str, out: str, result_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    try:
        config = _config(Path(dataset_dir), Path(out), "max_steps=6", "val_every=1000")
        trainer = _trainer(config, DistributedContext(rank=rank, world_size=world_size))
        trainer.fit()
        torch.save(trainer.model.psp_encoder.state_dict(), Path(result_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_training_keeps_ranks_in_sync(dataset_dir: Path, tmp_path: Path) -> None:
    mp.spawn(
        _ddp_worker,
        args=(2, _free_port(), str(dataset_dir), str(tmp_path / "run"), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key, value in rank0.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # batch-norm statistics are per process (as in DDP without SyncBatchNorm)
        torch.testing.assert_close(value, rank1[key], msg=key)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_cli_train_with_synthetic_samples_and_resume(dataset_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from triplanenet.cli.main import app

    out = tmp_path / "run"
    args = ["train", "tiny", "--device", "cpu", "-O", f"data={dataset_dir}", "-O", f"out={out}"]
    args += ["-O", "max_steps=4", "-O", "add_triplanenet=2", "-O", "synthetic_samples=4", "-O", "save_every=2"]
    for item in NO_PERCEPTUAL:
        args += ["-O", item]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(list((out / "synthetic_4_seed0").glob("*.png"))) == 4
    more = [*args[:-2], "-O", "max_steps=6", "--resume", "auto"]
    for item in NO_PERCEPTUAL:
        more += ["-O", item]
    result = CliRunner().invoke(app, more, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and "at step 4" in result.output
    bad = CliRunner().invoke(app, ["train", "tiny", "-O", "batch_size=0"], catch_exceptions=False)
    assert bad.exit_code == 1 and "batch_size" in bad.output and "Traceback" not in bad.output


def test_torchrun_uses_the_same_entry_point(dataset_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
    ]
    command += ["-m", "triplanenet.cli.main", "train", "tiny", "--device", "cpu"]
    command += ["-O", f"data={dataset_dir}", "-O", f"out={out}", "-O", "max_steps=3", "-O", "add_triplanenet=1"]
    for item in NO_PERCEPTUAL:
        command += ["-O", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "checkpoints" / "last.pt").is_file()
