"""The training loop on the tiny model: losses fall, resume is bit-exact, Ctrl-C saves, DDP with gloo; the v2 recipe
(mirror inputs, hand-checked losses, the adversarial phase) and fine-tuning from an official-format file."""

from __future__ import annotations

import copy
import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from triplanenet.eg3d.camera import camera_label
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.errors import ConfigError
from triplanenet.io.model_checkpoints import load_triplanenet
from triplanenet.losses.symmetry import symmetry_loss_fixed_sigma
from triplanenet.train.build import build_criteria, build_trainer
from triplanenet.train.config import load_train_config
from triplanenet.train.synthetic import generate_synthetic_dataset
from triplanenet.train.trainer import DistributedContext, Trainer, TrainingError, collate

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
    return build_trainer(config, torch.device("cpu"), context, log=lambda _m: None)


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
    curve = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert [row["step"] for row in curve] == [20, 40] and all("val/mse_final" in row for row in curve)
    assert curve == [{k: pytest.approx(v) for k, v in row.items()} for row in trainer.val_history]
    resumed = _trainer(config)
    resumed.load_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000020.pt")
    assert [row["step"] for row in resumed.val_history] == [20]
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


def test_learned_sigma_net_width_comes_from_the_config(dataset_dir: Path, tmp_path: Path) -> None:
    narrow = ("confidence=learned", "confnet_nf=16", "confnet_zdim=32")
    criteria = build_criteria(_config(dataset_dir, tmp_path / "a", *narrow), torch.device("cpu"), log=lambda _m: None)
    assert criteria.confidence is not None and criteria.confidence_trainable
    assert criteria.confidence.cfg.nf == 16 and criteria.confidence.cfg.zdim == 32
    default = build_criteria(_config(dataset_dir, tmp_path / "b", "confidence=learned"), torch.device("cpu"))
    assert sum(p.numel() for p in default.confidence.parameters()) > 10 * sum(  # type: ignore[union-attr]
        p.numel() for p in criteria.confidence.parameters()
    )
    with pytest.raises(ConfigError, match="confnet_nf"):
        _config(dataset_dir, tmp_path / "c", "confnet_nf=24")


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


# ---------------------------------------------------------------------------------------------------------------------
# TriPlaneNet v2


def _batch(trainer: Trainer, size: int = 2) -> dict:
    return collate([trainer.train_set[i] for i in range(size)])


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
    ("version", "mirror"), [(2, 0.1), (2, 0.0), (1, 0.0)], ids=["v2", "v2-no-mirror-loss", "v1-no-mirror-loss"]
)
def test_training_updates_both_branches_with_finite_losses(
    dataset_dir: Path, tmp_path: Path, version: int, mirror: float
) -> None:
    mirror_weights = [f"psp_losses.mirror={mirror}", f"triplane_losses.mirror={mirror}"]
    options = ["max_steps=2", "add_triplanenet=1", "val_fraction=0", f"triplanenet_version={version}"]
    trainer = _trainer(_config(dataset_dir, tmp_path / "run", *options, *mirror_weights))
    assert trainer.model.version == version
    # v2's second branch reads the mirror view even without a mirror loss; v1 without one needs none.
    assert ("image_mirror" in trainer.train_set[0]) == (version == 2 or mirror > 0)
    before = {name: _weights(getattr(trainer.model, name)) for name in ("psp_encoder", "triplanenet_encoder")}
    history: list[dict[str, float]] = []
    trainer.fit(on_step=lambda _s, logs: history.append(logs))
    for name, weights in before.items():
        after = getattr(trainer.model, name).state_dict()
        assert any(not torch.equal(value, after[key]) for key, value in weights.items()), f"{name} did not train"
    assert "triplane/smooth_l1" in history[-1]
    assert ({"psp/symmetry", "triplane/symmetry"} <= set(history[-1])) == (mirror > 0)
    assert all(math.isfinite(v) for logs in history for v in logs.values())


@pytest.mark.parametrize("version", [2, 1])
def test_one_step_matches_an_independent_loss_computation(dataset_dir: Path, tmp_path: Path, version: int) -> None:
    """Both branch losses of one step, recomputed with the model API, the loss functions and the same render RNG
    (mirror_eps and normalize_mirror set, so they must reach the loss)."""
    options = ["add_triplanenet=0", "mirror_eps=1.0", "normalize_mirror=true", f"triplanenet_version={version}"]
    config = _config(dataset_dir, tmp_path / "run", *options)
    trainer = _trainer(config)
    batch = _batch(trainer)
    reference = copy.deepcopy(trainer.model).train()
    rng = torch.Generator()
    rng.set_state(trainer.render_rng.get_state())
    logs = trainer.training_step(batch)

    x, camera = batch["image"], batch["camera"]
    x_m, camera_m = batch["image_mirror"], batch["camera_mirror"]
    ones = torch.ones_like(x[:, :1])

    def mirror(y_m: torch.Tensor, kind: str) -> torch.Tensor:
        return 0.1 * symmetry_loss_fixed_sigma(x_m, y_m, ones, kind, eps=1.0, normalize=True)

    with torch.no_grad():
        ws = reference.encode_ws(x)
        planes = reference.decoder.planes(ws)
        first, first_m = reference.render_pair(planes, ws, camera, camera_m, generator=rng)
        y, y_m = reference.pool_to_input(first.image), reference.pool_to_input(first_m.image)
        psp = F.mse_loss(y, x) + mirror(y_m, "l2")
        offsets = reference.predict_offsets(x, y, planes, x_m, y_m)  # v1 reads [y, x - y] only
        final, final_m = reference.render_pair(planes + offsets.view_as(planes), ws, camera, camera_m, generator=rng)
        triplane = F.smooth_l1_loss(reference.pool_to_input(final.image), x) + mirror(
            reference.pool_to_input(final_m.image), "smooth_l1"
        )
    assert logs["psp/total"] == pytest.approx(psp.item(), rel=1e-5)
    assert logs["triplane/total"] == pytest.approx(triplane.item(), rel=1e-5)


def test_mirror_eps_and_normalize_reach_the_symmetry_loss(dataset_dir: Path, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    x_m, y_m = torch.rand(2, 2, 3, 8, 8, generator=generator) * 2 - 1
    sigma = torch.rand(2, 1, 8, 8, generator=generator) + 0.1
    plain = build_criteria(_config(dataset_dir, tmp_path), torch.device("cpu"), log=lambda _m: None)
    official = build_criteria(
        _config(dataset_dir, tmp_path, "mirror_eps=1", "normalize_mirror=true"), torch.device("cpu"), lambda _m: None
    )
    expected = symmetry_loss_fixed_sigma(x_m, y_m, sigma, "smooth_l1", eps=1.0, normalize=True)
    torch.testing.assert_close(official.symmetry(x_m, y_m, sigma, "smooth_l1"), expected)
    torch.testing.assert_close(
        plain.symmetry(x_m, y_m, sigma, "smooth_l1"), symmetry_loss_fixed_sigma(x_m, y_m, sigma, "smooth_l1")
    )
    assert not torch.allclose(plain.symmetry(x_m, y_m, sigma, "smooth_l1"), expected)


ADVERSARIAL = [
    "max_steps=5",
    "add_triplanenet=1",
    "adversarial=true",
    "add_discriminator=2",
    "r1_every=2",
    "batch_size=1",
    "batch_size_after_triplanenet=2",
    "batch_size_after_discriminator=1",
    "val_fraction=0",
    "save_every=3",
]


def test_v2_adversarial_phase_resumes_bit_for_bit(dataset_dir: Path, tmp_path: Path) -> None:
    straight_trainer = _trainer(_config(dataset_dir, tmp_path / "a", *ADVERSARIAL))
    assert straight_trainer.train_set[0]["image_full"].shape == (3, 128, 128)  # the generator's output resolution
    assert straight_trainer.discriminator is not None
    assert straight_trainer.discriminator.config.img_resolution == 128
    straight: list[dict[str, float]] = []
    straight_trainer.fit(on_step=lambda _s, logs: straight.append(logs))
    assert "adv/g" not in straight[1] and {"adv/g", "adv/d", "adv/r1"} <= set(straight[2])
    assert "adv/r1" not in straight[3] and "adv/r1" in straight[4]  # lazy R1 every 2 steps
    assert all(math.isfinite(v) for logs in straight for v in logs.values())

    resumed_trainer = _trainer(_config(dataset_dir, tmp_path / "b", *ADVERSARIAL))
    resumed_trainer.load_checkpoint(tmp_path / "a" / "checkpoints" / "step_00000003.pt")
    assert resumed_trainer.step == 3
    resumed: list[dict[str, float]] = []
    resumed_trainer.fit(on_step=lambda _s, logs: resumed.append(logs))
    assert resumed == straight[3:]
    for name in ("model", "discriminator"):
        expected = getattr(straight_trainer, name).state_dict()
        for key, value in getattr(resumed_trainer, name).state_dict().items():
            assert torch.equal(value, expected[key]), f"{name}.{key}"

    # Fake cameras: a random training pose half of the time, else the input or the mirror camera.
    camera, camera_m = torch.zeros(2, 25), torch.ones(2, 25)
    picks = [straight_trainer._fake_camera(camera, camera_m) for _ in range(400)]
    own = sum(p is camera for p in picks) / 400, sum(p is camera_m for p in picks) / 400
    assert 0.17 < own[0] < 0.33 and 0.17 < own[1] < 0.33
    poses = straight_trainer.poses
    assert all((pose == poses).all(1).any() for p in picks if p is not camera and p is not camera_m for pose in p)


def _official_ranger(state: dict) -> dict:
    """Our Ranger state dict as the official Ranger writes it (no radam_buffer, its own group keys)."""
    group = dict(state["param_groups"][0])
    group["N_sma_threshhold"] = group.pop("n_sma_threshold")
    group["step_counter"] = 0
    return {"state": state["state"], "param_groups": [group]}


def test_fine_tuning_from_an_official_format_checkpoint(dataset_dir: Path, tmp_path: Path) -> None:
    options = ["max_steps=2", "add_triplanenet=0", "adversarial=true", "add_discriminator=0", "val_fraction=0"]
    source = _trainer(_config(dataset_dir, tmp_path / "a", *options))
    source.fit()
    assert source.discriminator is not None and source.discriminator_optimizer is not None
    official = {
        "state_dict": source.model.state_dict(),
        "opts": {"use_pixelshuffle": False, "use_discriminator": True},
        "step": 1_500_000,
        "best_val_loss": 0.1,
        "psp_optimizer": _official_ranger(source.psp_optimizer.state_dict()),
        "triplane_optimizer": _official_ranger(source.triplane_optimizer.state_dict()),
        "dis_state_dict": source.discriminator.state_dict(),
        "dis_optimizer": source.discriminator_optimizer.state_dict(),
    }
    path = tmp_path / "triplanenet_v2_final.pth"
    torch.save(official, path)

    trainer = _trainer(_config(dataset_dir, tmp_path / "b", *options, f"init_checkpoint={path}", "lr_psp=5e-4"))
    assert trainer.step == 0
    for name in ("model", "discriminator"):
        expected = getattr(source, name).state_dict()
        for key, value in getattr(trainer, name).state_dict().items():
            assert torch.equal(value, expected[key]), f"{name}.{key}"
    for mine, theirs in (
        (trainer.psp_optimizer, source.psp_optimizer),
        (trainer.triplane_optimizer, source.triplane_optimizer),
        (trainer.discriminator_optimizer, source.discriminator_optimizer),
    ):
        params = [p for g in mine.param_groups for p in g["params"]]
        source_params = [p for g in theirs.param_groups for p in g["params"]]
        for p, q in zip(params, source_params, strict=True):
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(mine.state[p][key], theirs.state[q][key])
    assert trainer.psp_optimizer.param_groups[0]["lr"] == 5e-4  # the run's learning rate, not the file's
    logs = trainer.training_step(_batch(trainer))
    assert all(math.isfinite(v) for v in logs.values())

    broken = dict(official, triplane_optimizer=copy.deepcopy(official["triplane_optimizer"]))
    first = next(iter(broken["triplane_optimizer"]["state"].values()))
    first["exp_avg"] = first["exp_avg"][..., :1]
    torch.save(broken, path)
    with pytest.raises(TrainingError, match="moments of"):
        _trainer(_config(dataset_dir, tmp_path / "c", *options, f"init_checkpoint={path}"))
    with pytest.raises(ConfigError, match="triplanenet_version"):
        _trainer(_config(dataset_dir, tmp_path / "d", f"init_checkpoint={path}", "triplanenet_version=1"))


def test_lr_decay_reaches_the_optimizers_and_resumes_bit_for_bit(dataset_dir: Path, tmp_path: Path) -> None:
    decay = ("lr_psp=2e-3", "lr_triplane=1e-3", "lr_decay_start=5", "lr_decay_final=0.25", "save_every=8")
    config = _config(dataset_dir, tmp_path / "a", *decay)
    trainer = _trainer(config)
    seen: list[tuple[float, float]] = []
    straight: list[dict[str, float]] = []

    def record(_step: int, logs: dict[str, float]) -> None:
        seen.append((trainer.psp_optimizer.param_groups[0]["lr"], trainer.triplane_optimizer.param_groups[0]["lr"]))
        straight.append(logs)

    trainer.fit(on_step=record)
    # Step s trains with factor(s): constant up to step 5, then down to 0.25 x at step 12 (never reached: 0..11).
    expected = [(2e-3 * config.lr_factor(s), 1e-3 * config.lr_factor(s)) for s in range(12)]
    assert seen == [pytest.approx(pair) for pair in expected]
    assert seen[5] == pytest.approx((2e-3, 1e-3)) and seen[11][1] < 0.3e-3
    resumed = _trainer(_config(dataset_dir, tmp_path / "b", *decay))
    resumed.load_checkpoint(tmp_path / "a" / "checkpoints" / "step_00000008.pt")
    after: list[dict[str, float]] = []
    resumed.fit(on_step=lambda _s, logs: after.append(logs))
    assert after == straight[8:]


def test_widening_the_second_branch_continues_from_a_trained_run(dataset_dir: Path, tmp_path: Path) -> None:
    options = ("max_steps=3", "add_triplanenet=0", "val_fraction=0", "save_every=3", "confidence=learned")
    source = _trainer(_config(dataset_dir, tmp_path / "a", *options))
    source.fit()
    checkpoint = tmp_path / "a" / "checkpoints" / "last.pt"
    wide_options = (*options, f"init_checkpoint={checkpoint}", "triplane_width=2")
    trainer = _trainer(_config(dataset_dir, tmp_path / "b", *wide_options))
    narrow_cfg, wide_cfg = source.model.config.triplane, trainer.model.config.triplane
    assert wide_cfg == narrow_cfg.widened(2)
    assert wide_cfg.body.channels == tuple(2 * c for c in narrow_cfg.body.channels)
    # The widened model renders what the trained one rendered.
    batch = _batch(trainer)
    for model in (source.model, trainer.model):
        model.eval()
    with torch.no_grad():
        kwargs = {"x_mirror": batch["image_mirror"], "camera_mirror": batch["camera_mirror"], "deterministic": True}
        before = source.model(batch["image"], batch["camera"], **kwargs)
        after = trainer.model(batch["image"], batch["camera"], **kwargs)
    torch.testing.assert_close(after.offsets, before.offsets, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(after.image, before.image, atol=1e-5, rtol=1e-4)
    assert before.offsets.abs().mean() > 1e-4
    # It trains, and its checkpoints load as the wide model.
    trainer.model.train()
    history: list[dict[str, float]] = []
    trainer.fit(on_step=lambda _s, logs: history.append(logs))
    assert len(history) == 3 and all(math.isfinite(v) for logs in history for v in logs.values())
    loaded = load_triplanenet(tmp_path / "b" / "checkpoints" / "last.pt")
    assert loaded.config.triplane == wide_cfg
    # A run of the same width resumes bit for bit.
    resumed = _trainer(_config(dataset_dir, tmp_path / "c", *wide_options))
    resumed.load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert resumed.step == 3
    with pytest.raises(ConfigError, match="triplane_width"):
        _config(dataset_dir, tmp_path / "d", "triplane_width=0.5")
    narrower = (*options, f"init_checkpoint={tmp_path / 'b' / 'checkpoints' / 'last.pt'}", "triplane_width=1.5")
    with pytest.raises(ConfigError, match="narrower"):
        _trainer(_config(dataset_dir, tmp_path / "e", *narrower))
