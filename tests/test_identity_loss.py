"""The identity term of training (stages/identity_loss.py) on real faces of the repository's test media.

What must hold for the term to mean anything: the chip it cuts from a training window is dlib's face chip
(so the recogniser sees what it was trained on), the hinge is large for A's own faces and zero for the
donor's, and gradients reach the swapped pixels.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deid.stages.augment import plain
from deid.stages.identity_loss import IdentityLoss
from deid.stages.train_data import FaceSet, Window, window_size

pytest.importorskip("face_recognition_models")


def _targets(folder, size: int, step: int = 4) -> torch.Tensor:
    window = Window(window_size(size, size), "face", 0.875, "extended")
    faces = FaceSet.load("faces", folder, window, torch.device("cpu"))
    return plain(faces.batch(torch.arange(0, len(faces), step), torch.device("cpu")), size, size).target


@pytest.fixture(scope="module")
def people(extracted):
    return extracted("video/talking_1.mp4"), extracted("video/talking_2.mp4")


def test_the_chip_cut_from_a_training_window_is_dlibs_face_chip(extracted):
    """Descriptors of chips cut from 256 px training windows vs dlib's own chips of the same faces (cut from
    extract's head crops with the landmarks mapped into them; the PyTorch port of the recogniser, which
    tests/test_dlib_resnet.py holds to dlib within 2e-6). The window is aligned to the mean face by all its
    points, dlib's chip by a subset, so the two differ a little; a different person is ~0.8 away."""
    import cv2

    from deid.models.alignment import transform_points
    from deid.models.dlib_resnet import embed

    folder = extracted("video/talking_1.mp4")
    window = Window(window_size(256, 256), "face", 0.875, "extended")
    faces = FaceSet.load("faces", folder, window, torch.device("cpu"))
    index = torch.arange(0, len(faces), 30)
    loss = IdentityLoss(256, "face", 0.875, torch.device("cpu"), margin=0.05)
    ours = loss.descriptors(plain(faces.batch(index, torch.device("cpu")), 256, 256).target).detach().numpy()
    theirs = []
    for i in index.tolist():
        ref = faces.refs[i]
        crop = cv2.cvtColor(cv2.imread(str(ref.image)), cv2.COLOR_BGR2RGB)
        theirs.append(embed(crop, [transform_points(ref.landmarks, ref.matrix)])[0])
    distance = np.linalg.norm(ours - np.stack(theirs), axis=1)
    print("window chip vs dlib chip:", np.round(distance, 3))
    assert distance.max() < 0.2, distance


def test_the_hinge_pushes_a_from_a_and_lets_the_donor_be(people):
    a_faces, b_faces = (_targets(folder, 64) for folder in people)
    loss = IdentityLoss(64, "face", 0.875, torch.device("cpu"), margin=0.05)
    loss.set_centre("a", a_faces[::2])
    loss.set_centre("b", b_faces[::2])
    assert float((loss.centres["a"] - loss.centres["b"]).norm()) > 0.6  # two different people, as dlib sees them
    own, to_a, _ = loss(a_faces[1::2])
    donor, _, to_b = loss(b_faces[1::2])
    print(f"A's own faces: hinge {float(own):.3f}, {float(to_a.mean()):.3f} from A; "
          f"B's faces: hinge {float(donor):.3f}, {float(to_b.mean()):.3f} from B")
    assert float(own) > 0.5 and float(to_a.max()) < 0.6
    assert float(donor) < 0.05 and float(to_b.max()) < 0.6

    swapped = a_faces[1:5].clone().requires_grad_(True)
    value, _, _ = loss(swapped)
    value.backward()
    assert swapped.grad is not None and float(swapped.grad.abs().sum()) > 0


def test_a_pipeline_trained_against_the_recogniser_says_so_in_its_report(tmp_path):
    """The identity term optimises the very network evaluate scores with: the report must not hide that."""
    import dataclasses

    from deid.pipeline.config import PipelineConfig
    from deid.pipeline.workflow import recogniser_caveats

    plain = PipelineConfig(target=tmp_path / "a.mp4", donor=tmp_path / "b.mp4", runs_dir=tmp_path)
    assert recogniser_caveats(plain) == ()
    trained = dataclasses.replace(plain, train=dataclasses.replace(plain.train, identity_weight=1.0))
    (caveat,) = recogniser_caveats(trained)
    assert "train.identity_weight=1" in caveat and "optimistic" in caveat
