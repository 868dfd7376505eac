"""Training losses: pixel reconstruction, LPIPS-alex, ArcFace identity, uncertainty-weighted mirror (symmetry) terms
and the unsup3d ConfNet that predicts the uncertainty map."""

from triplanenet.losses.adversarial import discriminator_logistic_loss, generator_adversarial_loss, r1_penalty
from triplanenet.losses.confnet import (
    FLIP_SIGMA_CHANNEL,
    ConfNet,
    ConfNetConfig,
    load_conf_map,
    load_confnet,
    mirror_sigma,
    save_conf_map,
)
from triplanenet.losses.discriminator import Discriminator, DiscriminatorConfig
from triplanenet.losses.identity import (
    IDENTITY_DISABLED,
    IDENTITY_DISABLED_WARNING,
    PSP_FACE_CROP,
    IdentityLoss,
    IdentityLossDisabledWarning,
    IdentityLossOutput,
    load_identity_network,
    scaled_crop,
)
from triplanenet.losses.lpips import LPIPS, unit_normalize
from triplanenet.losses.reconstruction import l1_loss, l2_loss, smooth_l1_loss
from triplanenet.losses.symmetry import (
    OFFICIAL_V2_EPS,
    laplacian_nll,
    pixel_distance,
    resize_sigma,
    symmetry_loss_fixed_sigma,
)

__all__ = [
    "FLIP_SIGMA_CHANNEL",
    "IDENTITY_DISABLED",
    "IDENTITY_DISABLED_WARNING",
    "LPIPS",
    "OFFICIAL_V2_EPS",
    "PSP_FACE_CROP",
    "ConfNet",
    "ConfNetConfig",
    "Discriminator",
    "DiscriminatorConfig",
    "IdentityLoss",
    "IdentityLossDisabledWarning",
    "IdentityLossOutput",
    "discriminator_logistic_loss",
    "generator_adversarial_loss",
    "l1_loss",
    "l2_loss",
    "laplacian_nll",
    "load_conf_map",
    "load_confnet",
    "load_identity_network",
    "mirror_sigma",
    "pixel_distance",
    "r1_penalty",
    "resize_sigma",
    "save_conf_map",
    "scaled_crop",
    "smooth_l1_loss",
    "symmetry_loss_fixed_sigma",
    "unit_normalize",
]
