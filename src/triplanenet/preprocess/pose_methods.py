"""The camera estimators a photo can be posed with (``--pose``), behind one call.

* ``"3ddfa"`` (default): 3DDFA_V2's 3DMM head-pose regressor (:mod:`~triplanenet.preprocess.tddfa_pose`).
* ``"mesh"``: MediaPipe's 468-point face mesh fitted with a mean face (:mod:`~triplanenet.preprocess.mesh_pose`).
* ``"mtcnn"``: the 5-landmark mean-face fit (:func:`~triplanenet.preprocess.pose.estimate_pose`); needs no
  network beyond MTCNN.

Accuracy against the official cameras of real photos: ``docs/cameras.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from triplanenet.errors import ConfigError
from triplanenet.preprocess.align import AlignedFace
from triplanenet.preprocess.pose import PoseEstimate, estimate_pose

if TYPE_CHECKING:
    from triplanenet.preprocess.face_mesh import FaceMeshNet
    from triplanenet.preprocess.tddfa import TddfaNet

__all__ = [
    "DEFAULT_POSE_METHOD",
    "POSE_METHODS",
    "PoseMethod",
    "PoseNetworks",
    "check_pose_method",
    "estimate_face_pose",
]

PoseMethod = Literal["3ddfa", "mesh", "mtcnn"]
POSE_METHODS: tuple[str, ...] = ("3ddfa", "mesh", "mtcnn")
DEFAULT_POSE_METHOD: PoseMethod = "3ddfa"


def check_pose_method(method: str, option: str = "pose") -> PoseMethod:
    """``method`` if it names an estimator, else a one-line :class:`ConfigError` naming ``option``."""
    if method not in POSE_METHODS:
        raise ConfigError(f"{option} must be {', '.join(POSE_METHODS[:-1])} or {POSE_METHODS[-1]}, got {method!r}")
    return cast(PoseMethod, method)


@dataclass
class PoseNetworks:
    """The network one estimator needs, loaded once (:meth:`load`) and shared by every photo or frame."""

    method: PoseMethod
    network: TddfaNet | FaceMeshNet | None = None

    @classmethod
    def load(cls, method: str) -> PoseNetworks:
        """Check ``method`` and load its weights now, so that missing weights stop a batch before its first photo.

        Raises:
            ConfigError: unknown method.
            CheckpointError: the weights are missing (one line: run ``triplanenet fetch-weights``).
        """
        checked = check_pose_method(method)
        if checked == "3ddfa":
            from triplanenet.preprocess.tddfa import load_tddfa

            return cls(checked, load_tddfa())
        if checked == "mesh":
            from triplanenet.preprocess.face_mesh import load_face_mesh

            return cls(checked, load_face_mesh())
        return cls(checked)


def estimate_face_pose(
    aligned: AlignedFace,
    box: np.ndarray,
    networks: PoseNetworks,
    camera: Literal["official", "lookat"] = "official",
    pitch_offset: float | None = None,
) -> PoseEstimate:
    """Camera of one aligned face.

    Args:
        aligned: the face's EG3D crop (:func:`~triplanenet.preprocess.align.align_face`).
        box: (4,) the face's MTCNN box ``[x1, y1, x2, y2]`` in the **source photo** (used by ``"3ddfa"``).
        networks: :meth:`PoseNetworks.load` of the estimator.
        camera: ``"official"`` (keeps roll, like EG3D's labels) or ``"lookat"`` (roll-free look-at camera).
        pitch_offset: ``"mesh"`` only: override :data:`~triplanenet.preprocess.mesh_pose.PITCH_OFFSET`
            (calibration only).
    """
    if networks.method == "3ddfa":
        from triplanenet.preprocess.tddfa_pose import box_in_crop, estimate_pose_tddfa

        crop_box = box_in_crop(box, aligned.transform)
        net = cast("TddfaNet", networks.network)
        return estimate_pose_tddfa(aligned.image, crop_box, aligned.landmarks, net, camera=camera)
    if networks.method == "mesh":
        from triplanenet.preprocess.mesh_pose import estimate_pose_mesh

        mesh_net = cast("FaceMeshNet", networks.network)
        kwargs = {} if pitch_offset is None else {"pitch_offset": pitch_offset}
        return estimate_pose_mesh(aligned.image, aligned.landmarks, mesh_net, camera=camera, **kwargs)
    return estimate_pose(aligned.landmarks, crop_size=aligned.image.shape[0], camera=camera)
