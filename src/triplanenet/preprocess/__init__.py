"""In-the-wild preprocessing: photo → EG3D-aligned 512² crop, 256² encoder input and 25-number camera label.

Steps (EG3D ``preprocess_in_the_wild.py``, reused by TriPlaneNet):

1. :func:`detect_faces` — MTCNN boxes + 5 landmarks (weights from the ``facenet-pytorch`` wheel, read as files);
2. :func:`align_face` — Deep3DFaceRecon ``align_img`` fit to the standard 3D landmarks, 1024 crop at
   ``rescale_factor`` 300, centre 700, LANCZOS to 512 (and 256 for the encoder);
3. the head pose in the crop, by default 3DDFA_V2's 3DMM regressor (a stand-in for Deep3DFaceRecon; the face
   mesh and 5-point fits are the alternatives, :mod:`.pose_methods`), converted like ``3dface2idr_mat.py`` +
   ``preprocess_face_cameras.py`` (radius 2.7, focal 4.2647).

:func:`preprocess_face` runs all three.

Example::

    from triplanenet.preprocess import preprocess_face
    result = preprocess_face(uint8_rgb_array)
    x, c = result.input_tensor(), result.label  # (3, 256, 256) in [-1, 1], (25,)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from triplanenet.preprocess.align import (
    LM3D_STD,
    TEMPLATE_LANDMARKS_512,
    AlignedFace,
    align_face,
    apply_affine,
    fit_landmarks_pos,
)
from triplanenet.preprocess.mtcnn import (
    LANDMARK_NAMES,
    MTCNN,
    Face,
    NoFaceError,
    batched_nms,
    detect_faces,
    load_mtcnn,
    nms,
)
from triplanenet.preprocess.pose import PoseEstimate, camera_from_face_pose, estimate_pose
from triplanenet.preprocess.pose_methods import (
    DEFAULT_POSE_METHOD,
    POSE_METHODS,
    PoseMethod,
    PoseNetworks,
    estimate_face_pose,
)

__all__ = [
    "LANDMARK_NAMES",
    "LM3D_STD",
    "MIN_CONFIDENCE",
    "MTCNN",
    "POSE_METHODS",
    "TEMPLATE_LANDMARKS_512",
    "AlignedFace",
    "Face",
    "NoFaceError",
    "PoseEstimate",
    "PoseNetworks",
    "PreprocessedFace",
    "align_face",
    "apply_affine",
    "batched_nms",
    "camera_from_face_pose",
    "detect_faces",
    "estimate_face_pose",
    "estimate_pose",
    "fit_landmarks_pos",
    "load_mtcnn",
    "nms",
    "preprocess_face",
]

MIN_CONFIDENCE: float = 0.9
"""EG3D's ``batch_mtcnn.py`` keeps a face only when its MTCNN confidence is above 0.9."""


@dataclass(frozen=True)
class PreprocessedFace:
    """Everything :func:`preprocess_face` produced for one photo.

    Attributes:
        face: the chosen detection (source-image coordinates).
        aligned: crops and transforms (:class:`AlignedFace`).
        pose: camera label and angles (:class:`PoseEstimate`).
    """

    face: Face
    aligned: AlignedFace
    pose: PoseEstimate

    @property
    def label(self) -> torch.Tensor:
        """(25,) float32 EG3D camera label."""
        return self.pose.label

    def image_tensor(self) -> torch.Tensor:
        """The 512² crop as a (3, 512, 512) float32 tensor in [−1, 1]."""
        return _to_unit_tensor(self.aligned.image)

    def input_tensor(self) -> torch.Tensor:
        """The 256² encoder input as a (3, 256, 256) float32 tensor in [−1, 1]."""
        return _to_unit_tensor(self.aligned.image_input)


def _to_unit_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0


def preprocess_face(
    image: Any,
    *,
    min_confidence: float = MIN_CONFIDENCE,
    camera: Literal["official", "lookat"] = "official",
    pad_mode: Literal["reflect", "edge", "constant"] = "reflect",
    model: MTCNN | None = None,
    what: str = "image",
    pose: PoseMethod = DEFAULT_POSE_METHOD,
    networks: PoseNetworks | None = None,
    pitch_offset: float | None = None,
) -> PreprocessedFace:
    """Detect, align and pose the main face of a photo, like EG3D's in-the-wild preprocessing.

    The main face is the largest (box width + height) among those with confidence above ``min_confidence``.
    (EG3D takes the largest face first and then drops the photo if that face is below 0.9; filtering first
    keeps photos whose largest detection is a false positive.)

    Args:
        image: uint8 (H, W, 3) RGB array, PIL image or image tensor (see ``mtcnn.to_rgb_tensor``).
        min_confidence: MTCNN confidence a face must exceed.
        camera: ``"official"`` (label keeps roll, as EG3D's) or ``"lookat"`` (roll-free look-at camera).
        pad_mode: fill outside the photo: ``"reflect"``, ``"edge"`` or ``"constant"`` (black, EG3D's script).
        model: MTCNN from :func:`load_mtcnn` (loaded on first use when None).
        what: how to name the image in error messages (e.g. its file name).
        pose: ``"3ddfa"`` (default: 3DDFA_V2's head-pose regressor, :mod:`.tddfa_pose`), ``"mesh"`` (468-point
            face mesh + canonical face fit, :mod:`.mesh_pose`) or ``"mtcnn"`` (5-landmark mean-face fit,
            :func:`estimate_pose`); see :mod:`.pose_methods`.
        networks: the estimator's network (:meth:`PoseNetworks.load`; loaded on first use when None).
        pitch_offset: with ``pose="mesh"``, override :data:`~triplanenet.preprocess.mesh_pose.PITCH_OFFSET`
            (calibration only).

    Raises:
        NoFaceError: no face above ``min_confidence``.
        InputImageError: unusable image.
        CheckpointError: MTCNN or the estimator's weights missing.
        ConfigError: unknown ``pose``.
    """
    if networks is None or networks.method != pose:
        networks = PoseNetworks.load(pose)
    faces = [face for face in detect_faces(image, model=model) if face.score > min_confidence]
    if not faces:
        raise NoFaceError(
            f"{what}: no face found (MTCNN confidence > {min_confidence:g}); "
            "use a photo with one clearly visible face at least 20 px wide"
        )
    face = faces[0]
    aligned = align_face(image, face.landmarks, pad_mode=pad_mode, keep_aligned=True)
    estimate = estimate_face_pose(aligned, face.box, networks, camera=camera, pitch_offset=pitch_offset)
    return PreprocessedFace(face=face, aligned=aligned, pose=estimate)
