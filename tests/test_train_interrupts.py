"""Interrupts tell the truth: the Ctrl-C save completes even under a second Ctrl-C, the message matches the files,
partial files of a killed save are cleaned, and ``--resume auto`` skips a broken ``last.pt`` for the newest intact
checkpoint. Signals are sent to this process with ``os.kill``; the tiny model keeps every run to a few steps."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from triplanenet.cli.main import app
from triplanenet.cli.train import interrupt_message
from triplanenet.eg3d.camera import camera_label
from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.io.atomic import interrupts_deferred, remove_stale_temporaries, termination_as_interrupt
from triplanenet.train.build import build_trainer
from triplanenet.train.config import load_train_config
from triplanenet.train.synthetic import generate_synthetic_dataset
from triplanenet.train.trainer import Trainer, TrainingError

NO_PERCEPTUAL = [
    f"{branch}.{weight}=0"
    for branch in ("psp_losses", "triplane_losses")
    for weight in ("lpips_weight", "mirror_lpips_weight", "id_weight", "mirror_id_weight")
]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(7)
    generator = TriPlaneGenerator(GeneratorConfig.tiny()).eval()
    cameras = camera_label(torch.linspace(-0.4, 0.4, 4), torch.zeros(4))
    return generate_synthetic_dataset(generator, cameras, 8, tmp_path_factory.mktemp("data"), seed=3)


def _overrides(dataset_dir: Path, out: Path, *extra: str) -> list[str]:
    return [f"data={dataset_dir}", f"out={out}", "max_steps=4", "add_triplanenet=2", *NO_PERCEPTUAL, *extra]


def _trainer(dataset_dir: Path, out: Path, *extra: str, log=lambda _m: None) -> Trainer:
    config = load_train_config("tiny", _overrides(dataset_dir, out, *extra))
    return build_trainer(config, torch.device("cpu"), log=log)


def _interrupt_at(step: int):
    def on_step(current: int, _logs: dict[str, float]) -> None:
        if current == step:
            raise KeyboardInterrupt

    return on_step


# ---------------------------------------------------------------------------------------------------------------
# interrupts_deferred


def test_an_interrupt_during_the_block_is_raised_after_it() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts_deferred() as received:
        os.kill(os.getpid(), signal.SIGINT)
        done.append("rest of the block")
        assert received == [signal.SIGINT]
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_blocks_own_error_wins_and_the_handler_is_restored() -> None:
    with pytest.raises(OSError, match="disk full"), interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        raise OSError("disk full")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupts_deferred() as received:
        pass
    assert received == []


def test_the_deferred_interrupt_goes_to_the_handler_that_was_in_place() -> None:
    calls: list[int] = []
    for handler in (signal.SIG_IGN, lambda signum, frame: calls.append(signum)):
        previous = signal.signal(signal.SIGINT, handler)
        try:
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGINT)
        finally:
            signal.signal(signal.SIGINT, previous)
    assert calls == [signal.SIGINT]  # ignored stays ignored; a custom handler is called once, after the block


def test_outside_the_main_thread_the_block_runs_unprotected() -> None:
    seen = []

    def work() -> None:
        with interrupts_deferred() as received:
            seen.append(received)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [[]]


def test_only_atomic_temporaries_are_removed(tmp_path: Path) -> None:
    for name in (".last.pt.ab12cd_9.pt", ".step_00000002.pt.zzzzzzzz.pt", "last.pt", ".hidden", ".x.pt.short.pt"):
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".last.pt.ab12cd_9.pt", ".step_00000002.pt.zzzzzzzz.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", ".x.pt.short.pt", "last.pt"]


def test_sigterm_raises_keyboard_interrupt_inside_the_block_and_is_held_back_while_writing() -> None:
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with pytest.raises(KeyboardInterrupt), termination_as_interrupt(), interrupts_deferred() as received:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        assert received == [signal.SIGTERM, signal.SIGINT, signal.SIGTERM]  # the block was not cut short
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt), termination_as_interrupt():
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_sigterm_handler_someone_else_installed_is_left_alone() -> None:
    calls: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        with termination_as_interrupt():
            signal.raise_signal(signal.SIGTERM)  # their handler runs; no KeyboardInterrupt
            with interrupts_deferred() as received:
                signal.raise_signal(signal.SIGTERM)
                assert calls == [signal.SIGTERM] and received == [signal.SIGTERM]
        assert calls == [signal.SIGTERM, signal.SIGTERM]  # delivered to it after the block
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------------------------
# The Ctrl-C save


def test_a_second_ctrl_c_during_the_interrupt_save_does_not_cut_it_short(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer(dataset_dir, tmp_path / "run")
    real_state = trainer.checkpoint_state

    def state_with_second_ctrl_c() -> dict:
        if trainer.step == 3:  # the interrupt save: the user presses Ctrl-C again while it is written
            os.kill(os.getpid(), signal.SIGINT)
        return real_state()

    monkeypatch.setattr(trainer, "checkpoint_state", state_with_second_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(on_step=_interrupt_at(3))
    assert trainer.saved_steps["last.pt"] == 3
    assert interrupt_message(trainer).startswith(f"saved {tmp_path / 'run' / 'checkpoints' / 'last.pt'} at step 3")
    again = _trainer(dataset_dir, tmp_path / "run")
    again.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert again.step == 3
    assert not list((tmp_path / "run" / "checkpoints").glob(".*")), "temporary files left behind"


def test_a_save_that_never_happened_is_not_reported_as_saved(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second Ctrl-C that lands before the interrupt save began: the CLI must not print "saved"."""
    real_save = Trainer.save_checkpoint

    def save(self: Trainer, name: str) -> Path:
        if self.step == 3 and name == "last.pt":
            raise KeyboardInterrupt
        return real_save(self, name)

    real_step = Trainer.training_step

    def training_step(self: Trainer, batch: dict) -> dict[str, float]:
        if self.step == 3:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    monkeypatch.setattr(Trainer, "training_step", training_step)
    args = ["train", "tiny", "--device", "cpu"]
    for item in _overrides(dataset_dir, tmp_path / "run", "save_every=2"):
        args += ["-O", item]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 130
    output = "".join(result.output.split())  # without the line breaks and spaces of the console's wrapping
    assert "interruptedatstep3beforelast.ptcouldbesaved" in output
    assert "thenewestcheckpointthisrunsaved,last.pt,holdsstep2" in output
    assert "saved" not in output.split("interruptedatstep")[0]


def test_sigterm_saves_last_pt_like_ctrl_c(dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``kill <pid>`` (or a scheduler's stop) during training: the step reached is saved, even when a second
    SIGTERM arrives while that file is written, and the command exits with code 130 and says where it saved.
    (``raise_signal`` delivers to this thread at once; ``os.kill`` may land on a torch worker thread first.)"""
    real_step = Trainer.training_step
    real_state = Trainer.checkpoint_state

    def training_step(self: Trainer, batch: dict) -> dict[str, float]:
        if self.step == 3:
            signal.raise_signal(signal.SIGTERM)
        return real_step(self, batch)

    def checkpoint_state(self: Trainer) -> dict:
        if self.step == 3:  # the interrupt save: a second SIGTERM while it is written
            signal.raise_signal(signal.SIGTERM)
        return real_state(self)

    monkeypatch.setattr(Trainer, "training_step", training_step)
    monkeypatch.setattr(Trainer, "checkpoint_state", checkpoint_state)
    out = tmp_path / "run"
    args = ["train", "tiny", "--device", "cpu"]
    for item in _overrides(dataset_dir, out, "max_steps=6", "save_every=100"):
        args += ["-O", item]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 130, result.output
    output = "".join(result.output.split())
    assert f"saved{out / 'checkpoints' / 'last.pt'}atstep3".replace(" ", "") in output
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    again = _trainer(dataset_dir, out)
    again.load_checkpoint(out / "checkpoints" / "last.pt")
    assert again.step == 3
    assert not list((out / "checkpoints").glob(".*")), "temporary files left behind"


# ---------------------------------------------------------------------------------------------------------------
# Starting again after a kill


def test_partial_files_of_a_killed_save_are_removed_at_the_next_start(dataset_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / ".last.pt.q1w2e3r4.pt").write_bytes(b"half a checkpoint")
    messages: list[str] = []
    _trainer(dataset_dir, tmp_path / "run", "max_steps=2", log=messages.append).fit()
    assert not list(folder.glob(".*"))
    assert any("removed 1 partial checkpoint file" in m for m in messages)


def test_resume_auto_falls_back_to_the_newest_intact_checkpoint(dataset_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _trainer(dataset_dir, out, "save_every=2").fit()
    folder = out / "checkpoints"
    last = folder / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a kill -9 that hit a non-atomic copy
    os.utime(folder / "step_00000002.pt", (1, 1))  # older than step_00000004.pt, whatever the file system says

    messages: list[str] = []
    trainer = _trainer(dataset_dir, out, "save_every=2", log=messages.append)
    assert trainer.resume_latest() == folder / "step_00000004.pt"
    assert trainer.step == 4
    assert any("cannot resume from" in m and "last.pt" in m for m in messages)
    assert any("newest intact checkpoint (step 4)" in m for m in messages)

    args = ["train", "tiny", "--device", "cpu", "--resume", "auto"]
    for item in _overrides(dataset_dir, out, "save_every=2", "max_steps=5"):
        args += ["-O", item]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    output = "".join(result.output.split())  # without the line breaks and spaces of the console's wrapping
    assert "cannotresumefrom" in output and "last.pt" in output and "truncatedorcorrupt" in output
    assert "resumedfrom" in output and "step_00000004.ptatstep4" in output

    for path in folder.glob("*.pt"):  # nothing intact at all: refuse rather than silently start over
        path.write_bytes(b"PK\x03\x04broken")
    with pytest.raises(TrainingError, match="no intact checkpoint to resume from"):
        _trainer(dataset_dir, out).resume_latest()
    assert _trainer(dataset_dir, tmp_path / "empty").resume_latest() is None
