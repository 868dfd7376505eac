"""Assemble a training run from a :class:`TrainConfig`: generator, model, datasets, loss functions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, Dataset

from triplanenet.eg3d.config import GeneratorConfig
from triplanenet.eg3d.generator import TriPlaneGenerator
from triplanenet.errors import ConfigError
from triplanenet.model import TriPlaneNet, TriPlaneNetConfig
from triplanenet.train.config import TrainConfig
from triplanenet.train.trainer import Criteria


def build_generator(config: TrainConfig, device: torch.device) -> TriPlaneGenerator:
    """The frozen EG3D generator: from ``config.generator``, or random weights of the model's size (tests)."""
    if config.generator:
        from triplanenet.io.checkpoints import load_generator

        generator = load_generator(config.generator, device=device)
    else:
        torch.manual_seed(config.seed)
        size = GeneratorConfig.tiny() if config.model == "tiny" else GeneratorConfig.ffhq512()
        generator = TriPlaneGenerator(size).eval().requires_grad_(False).to(device)
    if config.depth_samples is not None:
        generator.set_rendering(depth_resolution=config.depth_samples, depth_resolution_importance=config.depth_samples)
    return generator


def build_model(config: TrainConfig, generator: TriPlaneGenerator) -> TriPlaneNet:
    """TriPlaneNet around ``generator``: from ``init_checkpoint``, else fresh encoders (IR-SE-50 init if given)."""
    if config.init_checkpoint:
        from triplanenet.io.model_checkpoints import load_triplanenet

        model = load_triplanenet(config.init_checkpoint, generator=generator)
        model.decoder = generator
        return model
    if config.model == "tiny":
        model_config = TriPlaneNetConfig.tiny(config.triplane_variant, generator=generator.config)
    else:
        from triplanenet.encoders.config import TriPlaneEncoderConfig

        triplane = (
            TriPlaneEncoderConfig.official()
            if config.triplane_variant == "official_v1"
            else TriPlaneEncoderConfig.paper()
        )
        model_config = TriPlaneNetConfig(generator=generator.config, triplane=triplane)
    torch.manual_seed(config.seed)
    model = TriPlaneNet(model_config, generator=generator)
    latent_avg = getattr(generator, "latent_avg", None)
    model.set_latent_avg(latent_avg if latent_avg is not None else generator.w_avg)
    if config.irse50:
        initialise_from_arcface(model, config.irse50)
    return model


def initialise_from_arcface(model: TriPlaneNet, path: str) -> None:
    """Official initialisation: IR-SE-50 ArcFace weights for both encoder bodies; the 6-channel first conv of the
    second branch gets the pretrained RGB filters on channels 0–2 and N(0, 1) on channels 3–5."""
    from triplanenet.io.checkpoints import safe_torch_load

    state = safe_torch_load(path)
    if not isinstance(state, dict) or "input_layer.0.weight" not in state:
        raise ConfigError(f"{path}: not an IR-SE-50 state dict (model_ir_se50.pth)")
    body = {k: v for k, v in state.items() if k.startswith(("input_layer.", "body."))}
    missing = model.psp_encoder.load_state_dict(body, strict=False)
    if any(k.startswith(("input_layer.", "body.")) for k in missing.missing_keys):
        raise ConfigError(f"{path}: its IR-SE body does not match the pSp encoder")
    first = body["input_layer.0.weight"]
    generator = torch.Generator().manual_seed(0)
    extra = torch.randn(first.shape[0], 3, *first.shape[2:], generator=generator)
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
        mirror=config.uses_mirror,
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
        confidence = losses.ConfNet()
    for note in notes:
        log(f"note: {note}")
    return Criteria(
        lpips=lpips,
        identity=identity,
        symmetry=lambda x_m, y_m, sigma, kind: losses.symmetry_loss_fixed_sigma(x_m, y_m, sigma, distance=kind),
        laplacian_nll=losses.laplacian_nll,
        confidence=confidence,
        confidence_trainable=config.confidence == "learned",
        notes=notes,
    )
