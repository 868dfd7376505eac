"""Training configuration presets/overrides and the step-indexed sampler."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triplanenet.errors import ConfigError
from triplanenet.train.config import TrainConfig, load_train_config
from triplanenet.train.sampler import StepBatchSampler


def test_presets_hold_the_paper_and_code_values() -> None:
    paper = load_train_config("paper")
    assert (paper.batch_size, paper.add_triplanenet, paper.stop_psp, paper.max_steps) == (3, 20_000, 500_000, 1_500_000)
    assert paper.psp_losses.lpips_weight == 1.0 and paper.psp_losses.mirror == 0.1
    assert paper.triplane_losses.pixel == "smooth_l1" and paper.triplane_losses.lpips_weight == 1.0
    code = load_train_config("official_v1")
    assert code.psp_losses.lpips_weight == 0.8 and code.triplane_losses.lpips_weight == 0.1
    assert not code.uses_mirror and code.batch_size == 4 and code.max_steps == 1_000_000


def test_overrides_and_files(tmp_path: Path) -> None:
    config = load_train_config("paper", ["batch_size=8", "psp_losses.mirror=0", "data=some/folder", "generator=null"])
    assert config.batch_size == 8 and config.psp_losses.mirror == 0 and config.data == "some/folder"
    assert config.generator is None
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "official_v1"\nlr_psp = 5e-5\n[triplane_losses]\nlpips_weight = 0.3\n')
    config = load_train_config(str(toml), ["seed=3"])
    assert config.lr_psp == 5e-5 and config.triplane_losses.lpips_weight == 0.3 and config.seed == 3
    assert config.psp_losses.lpips_weight == 0.8  # the rest of the preset is kept
    # Overriding one field of a group keeps that group's other defaults (smooth-L1 for the second branch).
    assert load_train_config("tiny", ["triplane_losses.lpips_weight=0"]).triplane_losses.pixel == "smooth_l1"
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("source", "overrides", "message"),
    [
        ("paper", ["batch_size"], "key=value"),
        ("paper", ["no_such_option=1"], "unknown training option"),
        ("paper", ["psp_losses.nope=1"], "unknown option"),
        ("paper", ["batch_size=0"], "batch_size"),
        ("paper", ["confidence=confnet"], "confnet"),
        ("nonexistent.toml", [], "no such config file"),
    ],
)
def test_config_errors(source: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_train_config(source, overrides)


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("batch_size = = 3")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_train_config(str(path))


@settings(max_examples=30, deadline=None)
@given(
    num_items=st.integers(4, 40),
    batch_size=st.integers(1, 4),
    seed=st.integers(0, 100),
    resume=st.integers(0, 30),
)
def test_sampler_resume_gives_the_same_batches(num_items: int, batch_size: int, seed: int, resume: int) -> None:
    full = list(StepBatchSampler(num_items, batch_size, seed, 0, 40))
    resumed = list(StepBatchSampler(num_items, batch_size, seed, resume, 40))
    assert resumed == full[resume:]
    assert all(len(batch) == batch_size for batch in full)


def test_sampler_epochs_cover_the_data_and_ranks_are_disjoint() -> None:
    sampler = StepBatchSampler(12, 3, seed=1, start_step=0, max_steps=4)
    assert sorted(i for batch in sampler for i in batch) == list(range(12))
    rank0 = list(StepBatchSampler(12, 2, 1, 0, 3, rank=0, world_size=2))
    rank1 = list(StepBatchSampler(12, 2, 1, 0, 3, rank=1, world_size=2))
    assert sorted(i for b in rank0 + rank1 for i in b) == list(range(12))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        StepBatchSampler(3, 2, 0, 0, 1, world_size=2)
