"""Assemble a training run from a :class:`TrainConfig`: generator, model, datasets, loss functions, discriminator."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.encoders.widen import widen_triplane_encoder
from triplanenet.errors import ConfigError
from triplanenet.io.official_training import read_official_checkpoint
from triplanenet.losses.discriminator import Discriminator, DiscriminatorConfig
from triplanenet.model import TriPlaneNet, TriPlaneNetConfig
from triplanenet.train.config import TrainConfig
from triplanenet.train.trainer import Criteria, DistributedContext, Trainer


def build_generator(config: TrainConfig, device: torch.device) -> TriPlaneGenerator:
    """The frozen EG3D generator: from ``config.generator``, or random weights of the model's size (tests)."""
    if config.generator:
        from triplanenet.io.checkpoints import load_generator

        generator = load_generator(config.generator, device=device)
    else:
        torch.manual_seed(config.seed)
        size = GeneratorConfig.ffhq512() if config.model == "official" else GeneratorConfig.tiny()
        generator = TriPlaneGenerator(size).eval().requires_grad_(False).to(device)
    if config.depth_samples is not None:
        generator.set_rendering(depth_resolution=config.depth_samples, depth_resolution_importance=config.depth_samples)
    return generator


def build_model(
    config: TrainConfig, generator: TriPlaneGenerator, official: dict[str, Any] | None = None
) -> TriPlaneNet:
    """TriPlaneNet around ``generator``: from ``init_checkpoint``, else fresh encoders (IR-SE-50 init if given).

    ``init_checkpoint`` may be our model / training checkpoint (its own config) or an official TriPlaneNet file (v1 or
    v2, told from its keys; with ``model = tiny`` its weights must fit the tiny encoders). Its version must be
    ``triplanenet_version``. ``official``: that file's contents when the caller has already read it
    (:func:`~triplanenet.io.official_training.read_official_checkpoint`), so it is not read again.
    """
    if config.init_checkpoint:
        model = _initial_model(config, generator, official)
        if model.version != config.triplanenet_version:
            raise ConfigError(
                f"init_checkpoint {config.init_checkpoint} is a TriPlaneNet v{model.version} model but "
                f"triplanenet_version = {config.triplanenet_version}; set triplanenet_version={model.version}"
            )
        if config.upsampling not in (None, model.config.triplane.upsampling):
            raise ConfigError(
                f"init_checkpoint {config.init_checkpoint} has the {model.config.triplane.upsampling} decoder but "
                f"upsampling = {config.upsampling}; drop the upsampling option"
            )
        if config.triplane_width != 1.0:
            _widen_second_branch(config, model, generator)
        return model
    torch.manual_seed(config.seed)
    model = TriPlaneNet(_model_config(config, generator), generator=generator)
    _set_latent_avg(model, generator)
    if config.irse50:
        initialise_from_arcface(model, config.irse50)
    return model


def _widen_second_branch(config: TrainConfig, model: TriPlaneNet, generator: TriPlaneGenerator) -> None:
    """Grow the loaded model's second branch to this run's width (``triplane_width`` over the ``model`` preset),
    keeping its output; the added weights are seeded by ``seed``."""
    preset = dataclasses.replace(config, upsampling=model.config.triplane.upsampling)
    target = _model_config(preset, generator).triplane
    if model.config.triplane == target:
        return
    torch.manual_seed(config.seed)
    try:
        model.triplanenet_encoder = widen_triplane_encoder(model.triplanenet_encoder, target)
    except ConfigError as exc:
        raise ConfigError(
            f"init_checkpoint {config.init_checkpoint}: {exc}; triplane_width={config.triplane_width} applies to the "
            f"model={config.model} preset"
        ) from None
    model.config = dataclasses.replace(model.config, triplane=target)


def _model_config(config: TrainConfig, generator: TriPlaneGenerator) -> TriPlaneNetConfig:
    """The ``model`` preset for ``generator``, its second branch ``triplane_width`` times as wide."""
    preset = _preset_config(config, generator)
    if config.triplane_width == 1.0:
        return preset
    return dataclasses.replace(preset, triplane=preset.triplane.widened(config.triplane_width))


def _preset_config(config: TrainConfig, generator: TriPlaneGenerator) -> TriPlaneNetConfig:
    if config.model == "tiny":
        return TriPlaneNetConfig.tiny(config.triplanenet_version, generator.config, config.upsampling)
    if config.model == "compact":
        return TriPlaneNetConfig.compact(config.triplanenet_version, generator.config, config.upsampling)
    if config.triplanenet_version == 2:
        return TriPlaneNetConfig.official_v2(generator.config, config.upsampling or "nearest")
    if config.upsampling not in (None, "pixelshuffle"):
        raise ConfigError("TriPlaneNet v1 uses PixelShuffle upsampling; drop upsampling or use version 2")
    return TriPlaneNetConfig.official(generator.config)


def _set_latent_avg(model: TriPlaneNet, generator: TriPlaneGenerator) -> None:
    latent_avg = getattr(generator, "latent_avg", None)
    model.set_latent_avg(latent_avg if latent_avg is not None else generator.w_avg)


def _initial_model(config: TrainConfig, generator: TriPlaneGenerator, official: dict[str, Any] | None) -> TriPlaneNet:
    from triplanenet.io.model_checkpoints import load_triplanenet, triplanenet_from_official

    path = str(config.init_checkpoint)
    if official is None:
        official = read_official_checkpoint(path)
    if official is None:
        model = load_triplanenet(path, generator=generator)
        model.decoder = generator
        return model
    if config.model == "official":
        return triplanenet_from_official(official, generator, path)
    # The official file layout around the small encoders (tests and small experiments); the version from its keys.
    from triplanenet.io.checkpoints import check_state_dict
    from triplanenet.io.model_checkpoints import V2_HEAD_KEY

    version = 2 if V2_HEAD_KEY in official["state_dict"] else 1
    sizes = TriPlaneNetConfig.tiny if config.model == "tiny" else TriPlaneNetConfig.compact
    model = TriPlaneNet(sizes(version, generator.config, config.upsampling), generator=generator)
    check_state_dict(model.state_dict(), official["state_dict"], source=path)
    model.load_state_dict(official["state_dict"], strict=True)
    _set_latent_avg(model, generator)
    return model


def build_discriminator(config: TrainConfig, model: TriPlaneNet) -> Discriminator | None:
    """The critic of the adversarial phase (None without ``adversarial``), at the generator's output resolution: the
    official v2 architecture for the full-size model, the tiny one for ``model = tiny``; weights from
    ``discriminator`` or a random initialisation seeded by ``seed``."""
    if not config.adversarial:
        return None
    base = DiscriminatorConfig.official_v2() if config.model == "official" else DiscriminatorConfig.tiny()
    d_config = dataclasses.replace(base, img_resolution=model.config.generator.img_resolution)
    if config.discriminator:
        from triplanenet.io.discriminator_checkpoints import load_discriminator

        return load_discriminator(config.discriminator, d_config)
    torch.manual_seed(config.seed)
    return Discriminator(d_config).eval().requires_grad_(False)


def initialise_from_arcface(model: TriPlaneNet, path: str) -> None:
    """Official initialisation: IR-SE-50 ArcFace weights for both encoder bodies; the first conv of the second branch
    (6 channels in v1, 9 in v2) gets the pretrained RGB filters on channels 0–2 and N(0, 1) on the others."""
    from triplanenet.io.checkpoints import safe_torch_load
    from triplanenet.io.registry import resolve_checkpoint

    state = safe_torch_load(resolve_checkpoint(path))  # the name ir-se50 -> its cached download
    if not isinstance(state, dict) or "input_layer.0.weight" not in state:
        raise ConfigError(f"{path}: not an IR-SE-50 state dict (model_ir_se50.pth)")
    body = {k: v for k, v in state.items() if k.startswith(("input_layer.", "body."))}
    missing = model.psp_encoder.load_state_dict(body, strict=False)
    if any(k.startswith(("input_layer.", "body.")) for k in missing.missing_keys):
        raise ConfigError(f"{path}: its IR-SE body does not match the pSp encoder")
    first = body["input_layer.0.weight"]
    generator = torch.Generator().manual_seed(0)
    extra_channels = model.config.triplane.image_channels - first.shape[1]
    extra = torch.randn(first.shape[0], extra_channels, *first.shape[2:], generator=generator)
    body_triplane = dict(body)
    body_triplane["input_layer.0.weight"] = torch.cat([first, extra], dim=1)
    model.triplanenet_encoder.load_state_dict(body_triplane, strict=False)


def build_datasets(config: TrainConfig, model: TriPlaneNet) -> tuple[Dataset, Dataset | None]:
    """Training and validation splits of ``config.data`` (+ EG3D synthetic samples in the training split)."""
    from triplanenet.data import FaceDataset

    if not config.data:
        raise ConfigError("no dataset: set data = <folder with dataset.json> (or --override data=...)")
    resolution = model.config.input_resolution
    common = dict(
        resolution=resolution,
        # v2's second branch reads the mirror view even when no mirror loss is on.
        mirror=config.uses_mirror or model.uses_mirror,
        # The discriminator's real images, at the generator's output resolution.
        full_resolution=model.config.generator.img_resolution if config.adversarial else None,
        confidence_maps=config.confidence == "maps",
        val_fraction=config.val_fraction,
        seed=config.seed,
    )
    train_set: Dataset = FaceDataset(config.data, split="train", **common)
    val_set = FaceDataset(config.data, split="val", **common) if config.val_fraction > 0 else None
    if config.synthetic_samples > 0:
        if config.confidence == "maps":
            raise ConfigError(
                "EG3D synthetic samples have no confidence maps: use confidence = confnet or learned with "
                "synthetic_samples, or set synthetic_samples = 0"
            )
        from triplanenet.train.synthetic import generate_synthetic_dataset

        cameras = train_set.cameras  # type: ignore[attr-defined]
        folder = generate_synthetic_dataset(
            model.decoder,
            cameras,
            config.synthetic_samples,
            Path(config.out) / f"synthetic_{config.synthetic_samples}_seed{config.seed}",
            seed=config.seed,
        )
        synthetic = FaceDataset(folder, split="all", **{**common, "confidence_maps": False, "val_fraction": 0.0})
        train_set = ConcatDataset([train_set, synthetic])
    return train_set, val_set


def build_criteria(config: TrainConfig, device: torch.device, log: Callable[[str], None] = print) -> Criteria:
    """Loss functions for the run; the identity term is disabled with a printed note when no network is given."""
    from triplanenet import losses

    weights = (config.psp_losses, config.triplane_losses)
    lpips = None
    if any(w.lpips_weight or (w.mirror and w.mirror_lpips_weight) for w in weights):
        lpips = losses.LPIPS.from_file().to(device)
    identity = None
    notes: list[str] = []
    if any(w.id_weight or (w.mirror and w.mirror_id_weight) for w in weights):
        if config.irse50 or config.identity_network:
            from triplanenet.train.identity_net import load_identity_safetensors

            network = (
                losses.load_identity_network(config.irse50)
                if config.irse50
                else load_identity_safetensors(config.identity_network)  # type: ignore[arg-type]
            )
            id_loss = losses.IdentityLoss(network).to(device)
            identity = lambda y, x: id_loss(y, x).loss  # noqa: E731
        else:
            notes.append(losses.IDENTITY_DISABLED_WARNING)
    confidence = None
    if config.confidence == "confnet":
        assert config.confnet is not None
        confidence = losses.load_confnet(config.confnet).to(device).eval().requires_grad_(False)
    elif config.confidence == "learned":
        torch.manual_seed(config.seed)
        confidence = losses.ConfNet(nf=config.confnet_nf, zdim=config.confnet_zdim)
    for note in notes:
        log(f"note: {note}")
    return Criteria(
        lpips=lpips,
        identity=identity,
        symmetry=functools.partial(
            losses.symmetry_loss_fixed_sigma, eps=config.mirror_eps, normalize=config.normalize_mirror
        ),
        laplacian_nll=losses.laplacian_nll,
        confidence=confidence,
        confidence_trainable=config.confidence == "learned",
        notes=notes,
    )


def build_trainer(
    config: TrainConfig,
    device: torch.device,
    context: DistributedContext | None = None,
    log: Callable[[str], None] = print,
) -> Trainer:
    """A ready :class:`Trainer` for ``config``; when ``init_checkpoint`` is an official file its optimizer states (and
    discriminator) are loaded too. Resuming (:meth:`Trainer.load_checkpoint`) replaces all of that."""
    generator = build_generator(config, device)
    # An official init file is read once, for the weights and for its optimizer states (1.1 GB at full size).
    official = read_official_checkpoint(config.init_checkpoint) if config.init_checkpoint else None
    model = build_model(config, generator, official)
    train_set, val_set = build_datasets(config, model)
    criteria = build_criteria(config, device, log)
    critic = build_discriminator(config, model)
    trainer = Trainer(config, model, train_set, val_set, criteria, device, context, log=log, discriminator=critic)
    if official is not None:
        trainer.load_official_state(official, str(config.init_checkpoint))
    return trainer
