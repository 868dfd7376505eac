"""Pieces of the default-model pipeline on a tiny procedural world (the real run is scripts/train_default_model.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.errors import CheckpointError, ConfigError
from triplanenet.synth.dataset import build_synth_dataset, load_synth_world
from triplanenet.train.fit_generator import FitConfig, default_generator_config, fit_generator
from triplanenet.train.identity_net import (
    default_identity_config,
    face_crops,
    load_identity_safetensors,
    save_identity_network,
    train_identity_network,
    verification_scores,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    folder = build_synth_dataset(tmp_path_factory.mktemp("world"), identities=3, views=2, resolution=64, seed=0)
    return folder, load_synth_world(folder)


def test_world_folder_is_an_official_dataset_with_ground_truth(world) -> None:
    from triplanenet.data import FaceDataset

    folder, data = world
    assert data.images.shape == (6, 3, 64, 64) and data.params.shape[0] == 3
    assert data.identity.tolist() == [0, 0, 1, 1, 2, 2]
    fg = data.mask > 0.5
    assert data.depth[fg].min() >= 2.25 and data.depth[fg].max() <= 3.3
    dataset = FaceDataset(folder, resolution=32)
    assert len(dataset) == 6 and dataset[0]["image"].shape == (3, 32, 32)
    assert build_synth_dataset(folder, identities=3, views=2, resolution=64, seed=0) == folder  # reused, not rebuilt


def test_generator_fit_reduces_the_loss_and_sets_w_avg(world) -> None:
    _, data = world
    config = GeneratorConfig.tiny().replace(
        img_resolution=64, neural_rendering_resolution=16, rendering={"c_gen_conditioning_zero": True}
    )
    generator, latents, history = fit_generator(
        data, FitConfig(steps=12, batch_size=2, log_every=100), config, log=lambda _m: None
    )
    assert latents.shape == (3, config.z_dim)
    assert sum(h["loss"] for h in history[-3:]) < sum(h["loss"] for h in history[:3])
    assert not generator.training and torch.isfinite(generator.w_avg).all()
    assert default_generator_config().num_ws == 10


def test_identity_codes_start_the_latents_from_the_standardised_parameters(world) -> None:
    from triplanenet.synth.params import HeadParams
    from triplanenet.train.fit_generator import IDENTITY_CODE_DIM, identity_codes

    params = HeadParams.sample(torch.Generator().manual_seed(3), 64).vector
    codes = identity_codes(params)
    assert codes.shape == (64, IDENTITY_CODE_DIM)
    torch.testing.assert_close(codes.mean(dim=0), torch.zeros(IDENTITY_CODE_DIM), atol=1e-5, rtol=0)
    varying = codes.std(dim=0, unbiased=False) > 0
    torch.testing.assert_close(codes.std(dim=0, unbiased=False)[varying], torch.ones(int(varying.sum())))
    reseeded = params.clone()
    reseeded[:, -1] = torch.arange(64.0) * 977  # texture_seed (the last field) carries no code
    assert torch.equal(identity_codes(reseeded), codes)

    _, data = world
    config = GeneratorConfig.tiny().replace(
        img_resolution=64, neural_rendering_resolution=16, rendering={"c_gen_conditioning_zero": True}
    )
    fit = FitConfig(steps=1, batch_size=2, log_every=100, latent_init="params")
    with pytest.raises(ConfigError, match="z_dim"):
        fit_generator(data, fit, config, log=lambda _m: None)
    _, latents, _ = fit_generator(data, fit, config.replace(z_dim=IDENTITY_CODE_DIM), log=lambda _m: None)
    assert latents.shape == (3, IDENTITY_CODE_DIM)


def test_generator_fit_resumes_exactly_from_its_saved_state(
    world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import triplanenet.train.fit_generator as fitting

    _, data = world
    config = GeneratorConfig.tiny().replace(
        img_resolution=64, neural_rendering_resolution=16, rendering={"c_gen_conditioning_zero": True}
    )
    fit = FitConfig(steps=4, batch_size=2, log_every=100, save_every=2)
    whole, whole_latents, whole_history = fit_generator(data, fit, config, log=lambda _m: None)

    class Killed(Exception):
        pass

    save = fitting._save_state

    def save_then_die(path: Path, payload: dict) -> None:
        save(path, payload)
        if payload["step"] == 2:
            raise Killed

    state = tmp_path / "fit.state.pt"
    monkeypatch.setattr(fitting, "_save_state", save_then_die)
    with pytest.raises(Killed):
        fit_generator(data, fit, config, log=lambda _m: None, state_path=state)
    monkeypatch.setattr(fitting, "_save_state", save)

    messages: list[str] = []
    resumed, resumed_latents, resumed_history = fit_generator(data, fit, config, log=messages.append, state_path=state)
    assert any("resuming the generator fit at step 2/4" in m for m in messages)
    assert [h["loss"] for h in resumed_history] == [h["loss"] for h in whole_history]
    assert torch.equal(resumed_latents, whole_latents)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name

    with pytest.raises(CheckpointError, match="other settings"):
        fit_generator(data, FitConfig(**{**fit.__dict__, "lr": 1e-3}), config, log=lambda _m: None, state_path=state)
    state.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="delete it to start over"):
        fit_generator(data, fit, config, log=lambda _m: None, state_path=state)


def test_identity_network_trains_saves_and_loads(world, tmp_path: Path) -> None:
    _, data = world
    config = default_identity_config()
    network = train_identity_network(
        data.images, data.identity, steps=3, batch_size=4, config=config, log=lambda _m: None
    )
    scores = verification_scores(network, data.images, data.identity)
    assert set(scores) == {"same_cosine", "different_cosine", "auc"}
    # The values, recomputed from the embeddings: 3 same-identity pairs, 12 different-identity pairs.
    embeddings = network(face_crops(data.images, config.input_size))
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(6), atol=1e-5)
    cosine = embeddings @ embeddings.t()
    same = [float(cosine[i, i + 1]) for i in (0, 2, 4)]
    different = [float(cosine[i, j]) for i in range(6) for j in range(i + 1, 6) if i // 2 != j // 2]
    assert scores["same_cosine"] == pytest.approx(sum(same) / 3, abs=1e-6)
    assert scores["different_cosine"] == pytest.approx(sum(different) / 12, abs=1e-6)
    assert scores["auc"] == sum(s > d for s in same for d in different) / 36
    path = tmp_path / "identity.safetensors"
    save_identity_network(network, path)
    loaded = load_identity_safetensors(path)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(loaded(x), network(x))
    assert verification_scores(loaded, data.images, data.identity) == scores
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        load_identity_safetensors(tmp_path / "bad.safetensors")


def test_verification_scores_hand_computed() -> None:
    # Fixed unit embeddings for identities [0, 0, 1, 1, 2, 2]. Same-identity cosines: 0.6, 1.0, 0.6 (mean 2.2 / 3).
    # Different-identity cosines: 0.8 three times, 0.48 once, 0 eight times (mean 2.88 / 12 = 0.24). AUC: each 0.6
    # beats the eight zeros and 0.48 (9 of 12), 1.0 beats all 12: 30 of 36 pairs.
    embeddings = torch.tensor(
        [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.8, 0.0, 0.6]]
    )

    class FixedEmbeddings(torch.nn.Module):
        cfg = SimpleNamespace(input_size=8)

        def forward(self, crops: torch.Tensor) -> torch.Tensor:
            assert crops.shape == (6, 3, 8, 8)
            return embeddings

    identity = torch.tensor([0, 0, 1, 1, 2, 2])
    scores = verification_scores(FixedEmbeddings(), torch.zeros(6, 3, 32, 32), identity)  # type: ignore[arg-type]
    assert scores["same_cosine"] == pytest.approx(2.2 / 3, abs=1e-6)
    assert scores["different_cosine"] == pytest.approx(0.24, abs=1e-6)
    assert scores["auc"] == pytest.approx(30 / 36, abs=1e-7)  # a float32 mean


def test_the_training_script_stages_resolve_to_valid_configs() -> None:
    """The encoder, refine, widen, anneal and focus stages' overrides load; refine continues the encoder run where it
    stopped, widen starts from refine's last step with the wider second branch and the first branch frozen, anneal
    and focus continue the count at falling learning rates, and the final checkpoint is focus's."""
    import importlib.util

    from triplanenet.train.config import load_train_config

    path = Path(__file__).resolve().parents[1] / "scripts" / "train_default_model.py"
    spec = importlib.util.spec_from_file_location("train_default_model", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    encoder = load_train_config("paper", script.ENCODER_OVERRIDES)
    refine = load_train_config("paper", script.REFINE_OVERRIDES)
    assert encoder.max_steps == script.ENCODER_STEPS < refine.max_steps
    assert refine.lr_decay_start == encoder.max_steps and encoder.lr_decay_start is None
    assert refine.stop_psp <= encoder.max_steps  # the first branch stays frozen throughout refine
    assert (refine.triplane_losses.pixel, refine.triplane_losses.pixel_weight) == ("l2", 4.0)
    assert refine.psp_losses == encoder.psp_losses and refine.out != encoder.out
    same = ("model", "generator", "identity_network", "confidence", "confnet_nf", "synthetic_samples", "seed")
    assert all(getattr(refine, name) == getattr(encoder, name) for name in same)
    widen = load_train_config("paper", script.WIDEN_OVERRIDES)
    assert widen.init_checkpoint == str(script.REFINED_CHECKPOINT) and script.REFINED_CHECKPOINT.name == (
        f"step_{refine.max_steps:08d}.pt"
    )
    assert widen.triplane_width == 2 and widen.add_triplanenet == 0 and widen.stop_psp == 0
    assert widen.triplane_losses == refine.triplane_losses and widen.lr_triplane == refine.lr_triplane
    assert all(getattr(widen, name) == getattr(refine, name) for name in same) and widen.out not in (refine.out,)
    anneal = load_train_config("paper", script.ANNEAL_OVERRIDES)
    focus = load_train_config("paper", script.FOCUS_OVERRIDES)
    assert anneal.init_checkpoint in ("", None) and focus.init_checkpoint in ("", None)  # they resume, not re-init
    assert anneal.lr_decay_start == widen.max_steps < anneal.max_steps == focus.lr_decay_start < focus.max_steps
    assert anneal.lr_triplane < widen.lr_triplane and focus.lr_triplane < anneal.lr_triplane
    assert anneal.triplane_width == focus.triplane_width == 2 and anneal.stop_psp == focus.stop_psp == 0
    assert anneal.triplane_losses == widen.triplane_losses
    assert focus.triplane_losses.pixel_weight == 16.0 and focus.triplane_losses.lpips_weight == 1.0
    assert all(getattr(stage, name) == getattr(widen, name) for stage in (anneal, focus) for name in same)
    assert len({widen.out, anneal.out, focus.out}) == 3
    order = [script.ORDER.index(name) for name in ("encoder", "refine", "widen", "anneal", "focus", "sigma")]
    assert order == sorted(order) and order[-1] - order[0] == 5
    assert str(script.FINAL_CHECKPOINT).startswith(focus.out)
