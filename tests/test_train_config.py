"""Training configuration presets/overrides and the step-indexed sampler."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triplanenet.errors import ConfigError
from triplanenet.train.config import TrainConfig, load_train_config
from triplanenet.train.sampler import BatchSchedule, StepBatchSampler


def test_presets_hold_the_paper_and_code_values() -> None:
    paper = load_train_config("paper")
    assert (paper.batch_size, paper.add_triplanenet, paper.stop_psp, paper.max_steps) == (3, 20_000, 500_000, 1_500_000)
    assert paper.psp_losses.lpips_weight == 1.0 and paper.psp_losses.mirror == 0.1
    assert paper.triplane_losses.pixel == "smooth_l1" and paper.triplane_losses.lpips_weight == 1.0
    assert paper.triplanenet_version == 2 and paper.mirror_eps == 0.0 and not paper.adversarial
    code = load_train_config("official_v1")
    assert code.psp_losses.lpips_weight == 0.8 and code.triplane_losses.lpips_weight == 0.1
    assert not code.uses_mirror and code.batch_size == 4 and code.max_steps == 1_000_000
    assert code.triplanenet_version == 1


def test_v2_preset_is_the_official_train_options_v2() -> None:
    """Every default of the official ``options/train_options_v2.py`` that has a counterpart here."""
    v2 = load_train_config("v2")
    assert v2.triplanenet_version == 2 and v2.upsampling is None  # no --use_pixelshuffle: nearest
    assert (v2.batch_size, v2.add_triplanenet, v2.stop_psp, v2.max_steps) == (3, 20_000, 500_000, 1_500_000)
    assert v2.batch_changes() == [(20_000, 3), (500_000, 3)]  # every phase batch 3
    assert (v2.lr_psp, v2.lr_triplane, v2.optimizer) == (1e-4, 1e-4, "ranger")
    psp, tri = v2.psp_losses, v2.triplane_losses
    assert (psp.pixel, psp.pixel_weight, psp.lpips_weight, psp.id_weight) == ("l2", 1.0, 0.8, 0.1)
    assert (tri.pixel, tri.pixel_weight, tri.lpips_weight, tri.id_weight) == ("smooth_l1", 1.0, 0.8, 0.1)
    for branch in (psp, tri):  # mirror_lambda and the *_mirror lambdas
        mirror_terms = (branch.mirror, branch.symmetry_weight, branch.mirror_lpips_weight, branch.mirror_id_weight)
        assert mirror_terms == (0.1, 1.0, 0.8, 0.1)
    assert v2.mirror_eps == 1.0 and not v2.normalize_mirror and v2.confidence == "maps"  # EPS = 1, conf maps
    assert not v2.adversarial and v2.add_discriminator == 600_000 and v2.lr_discriminator == 1e-4
    assert (v2.adv_weight, v2.r1_gamma, v2.r1_every) == (0.005, 10.0, 16)
    assert (v2.log_every, v2.image_every, v2.val_every, v2.save_every) == (50, 100, 10_000, 100_000)
    with_critic = load_train_config("v2", ["adversarial=true", "batch_size_after_discriminator=2"])
    assert with_critic.batch_changes() == [(20_000, 3), (500_000, 3), (600_000, 2)]


def test_phase_batch_sizes_follow_the_boundaries() -> None:
    config = load_train_config(
        "tiny",
        [
            "add_triplanenet=10",
            "stop_psp=30",
            "adversarial=true",
            "add_discriminator=20",
            "batch_size_after_triplanenet=4",
            "batch_size_after_pspstop=1",
        ],
    )
    # None keeps the previous phase's size (the discriminator phase keeps 4).
    assert config.batch_changes() == [(10, 4), (20, 4), (30, 1)]
    schedule = BatchSchedule.from_changes(config.batch_size, config.batch_changes())
    assert schedule.phases == ((0, 2), (10, 4), (30, 1))  # equal neighbours merge
    assert [schedule.at(s) for s in (0, 9, 10, 29, 30, 99)] == [2, 2, 4, 4, 1, 1]
    assert BatchSchedule.from_changes(3, [(0, 5), (7, 2)]).phases == ((0, 5), (7, 2))  # a change at step 0 wins
    with pytest.raises(ConfigError, match="batch size"):
        BatchSchedule(((0, 0),))
    with pytest.raises(ConfigError, match="increasing"):
        BatchSchedule(((0, 1), (0, 2)))


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


@settings(max_examples=30, deadline=None)
@given(
    num_items=st.integers(6, 30),
    sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    gaps=st.lists(st.integers(1, 12), min_size=2, max_size=2),
    seed=st.integers(0, 100),
    resume=st.integers(0, 40),
)
def test_phased_sampler_resumes_and_switches_at_the_boundaries(
    num_items: int, sizes: list[int], gaps: list[int], seed: int, resume: int
) -> None:
    changes = [(sum(gaps[: i + 1]), size) for i, size in enumerate(sizes[1:])]
    schedule = BatchSchedule.from_changes(sizes[0], changes)
    full = list(StepBatchSampler(num_items, schedule, seed, 0, 40))
    assert list(StepBatchSampler(num_items, schedule, seed, resume, 40)) == full[resume:]
    assert [len(batch) for batch in full] == [schedule.at(step) for step in range(40)]
    sampler = StepBatchSampler(num_items, schedule, seed, 0, 40)
    by_epoch: dict[int, list[int]] = {}
    for step, batch in enumerate(full):
        by_epoch.setdefault(sampler.batch_position(step)[0], []).extend(batch)
    for items in by_epoch.values():  # an epoch is (part of) one permutation: no item twice
        assert len(items) == len(set(items))


def test_sampler_epochs_cover_the_data_and_ranks_are_disjoint() -> None:
    sampler = StepBatchSampler(12, 3, seed=1, start_step=0, max_steps=4)
    assert sorted(i for batch in sampler for i in batch) == list(range(12))
    rank0 = list(StepBatchSampler(12, 2, 1, 0, 3, rank=0, world_size=2))
    rank1 = list(StepBatchSampler(12, 2, 1, 0, 3, rank=1, world_size=2))
    assert sorted(i for b in rank0 + rank1 for i in b) == list(range(12))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        StepBatchSampler(3, 2, 0, 0, 1, world_size=2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        StepBatchSampler(5, BatchSchedule(((0, 2), (4, 3))), 0, 0, 6, world_size=2)  # a later phase's batch counts
    assert len(StepBatchSampler(5, BatchSchedule(((0, 2), (4, 3))), 0, 0, 4, world_size=2)) == 4  # ...if it runs
    phased = BatchSchedule(((0, 2), (3, 3)))
    rank0 = list(StepBatchSampler(12, phased, 1, 0, 5, rank=0, world_size=2))
    rank1 = list(StepBatchSampler(12, phased, 1, 0, 5, rank=1, world_size=2))
    for step in range(5):
        assert not set(rank0[step]) & set(rank1[step]) and len(rank0[step]) == phased.at(step)


def test_model_compact_builds_the_bundled_model_sizes() -> None:
    import torch

    from triplanenet.eg3d.config import GeneratorConfig
    from triplanenet.eg3d.generator import TriPlaneGenerator
    from triplanenet.model import TriPlaneNetConfig
    from triplanenet.train.build import build_model

    config = load_train_config("paper", ["model=compact"])
    torch.manual_seed(0)
    generator = TriPlaneGenerator(GeneratorConfig.tiny())
    model = build_model(config, generator)
    assert model.config == TriPlaneNetConfig.compact(2, generator.config)
    wide = build_model(load_train_config("paper", ["model=compact", "triplane_width=1.5"]), generator)
    assert wide.config.triplane == model.config.triplane.widened(1.5)
    assert wide.config.triplane.body.channels == (48, 72, 96, 144) and wide.config.psp == model.config.psp
    with pytest.raises(ConfigError):
        load_train_config("paper", ["model=huge"])
    with pytest.raises(ConfigError, match="whole numbers"):
        build_model(load_train_config("paper", ["model=compact", "triplane_width=1.1"]), generator)


@settings(max_examples=50, deadline=None)
@given(
    start=st.integers(0, 90),
    length=st.integers(1, 60),
    final=st.floats(0.01, 1.0),
    step=st.integers(0, 200),
)
def test_lr_decay_is_a_half_cosine_from_one_to_the_final_factor(
    start: int, length: int, final: float, step: int
) -> None:
    config = TrainConfig(max_steps=start + length, add_triplanenet=0, lr_decay_start=start, lr_decay_final=final)
    factor = config.lr_factor(step)
    assert final - 1e-12 <= factor <= 1.0 + 1e-12
    if step <= start:
        assert factor == 1.0
    if step >= start + length:
        assert factor == pytest.approx(final)
    if start < step < start + length:  # falling: the next step's factor is not larger
        assert config.lr_factor(step + 1) <= factor + 1e-12
    halfway = start + length / 2
    if length % 2 == 0:
        assert config.lr_factor(int(halfway)) == pytest.approx((1 + final) / 2)
    assert TrainConfig(max_steps=start + length, add_triplanenet=0).lr_factor(step) == 1.0  # no decay by default


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["max_steps=100", "lr_decay_start=100"], "lr_decay_start"),
        (["lr_decay_start=-1"], "lr_decay_start"),
        (["lr_decay_final=0"], "lr_decay_final"),
        (["lr_decay_final=1.5"], "lr_decay_final"),
    ],
)
def test_lr_decay_settings_are_checked(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_train_config("tiny", overrides)
