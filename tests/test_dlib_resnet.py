"""The PyTorch port of dlib's face recognition ResNet (models/dlib_resnet.py) against dlib itself.

tests/fixtures/dlib_face_descriptors.npz holds dlib's descriptors of real faces from tests/data with the
68- and 5-point landmarks they were computed from (regenerate with tests/fixtures/make_dlib_descriptors.py).
The port re-extracts the chips from the same media and must land within 1e-3 of dlib's descriptor (it lands
within ~2e-6: the chips are bit-identical, the rest is float32 summation order), so that every same/different
call at face_recognition's 0.6 tolerance comes out as dlib's.
"""
from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures.make_dlib_descriptors import load  # the media read exactly as the fixture was made

DATA = Path(__file__).resolve().parent / "data"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "dlib_face_descriptors.npz"
TOLERANCE = 1e-3  # Euclidean, on descriptors of norm ~1.4 whose same-person threshold is 0.6
THRESHOLD = 0.6

pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason=f"test media not found at {DATA}"),
    pytest.mark.skipif(importlib.util.find_spec("face_recognition_models") is None,
                       reason="dlib's model file comes from face_recognition_models, which is not installed"),
]


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def net():
    from deid.models.dlib_resnet import load_dlib_face_net
    return load_dlib_face_net()


@pytest.fixture(scope="module")
def ported(reference, net) -> dict[int, np.ndarray]:
    """The port's descriptors of every fixture face, per landmark count (all chips in one batch)."""
    from deid.models.dlib_resnet import face_chips
    keys = list(zip(reference["source"], reference["frame"]))
    chips: dict[int, list] = {68: [], 5: []}
    order = []
    for key in dict.fromkeys(keys):
        rows = [i for i, k in enumerate(keys) if k == key]
        order += rows
        image = load(str(key[0]), int(key[1]))
        for n in chips:
            chips[n].append(face_chips(image, [reference[f"landmarks{n}"][i] for i in rows]))
    out = {}
    with torch.no_grad():
        for n, parts in chips.items():
            out[n] = np.zeros((len(keys), 128), np.float32)
            out[n][order] = net(torch.cat(parts)).numpy()
    return out


def test_fixture_is_big_enough(reference) -> None:
    assert len(reference["source"]) >= 12
    assert FIXTURE.stat().st_size < 200_000


def test_parsed_network_is_dlibs_anet(net) -> None:
    from deid.models.dlib_resnet import default_model_path, read_dlib_net
    parsed = read_dlib_net(default_model_path())
    # input_rgb_image_sized<150> with dlib's published channel means; 14 residual blocks (4 of them
    # down-sampling) between the stem and avg_pool_everything + fc_no_bias<128>.
    assert parsed.input_size == (150, 150)
    np.testing.assert_allclose(parsed.input_mean, (122.782, 117.001, 104.298), atol=1e-3)
    assert len(net.blocks) == 14 and sum(b.down for b in net.blocks) == 4
    assert parsed.wrappers == len(parsed.layers) + 14 + 2 * 4  # + tag1 per block, tag2 and skip1 per down block
    assert net.fc.weight.shape == (128, 256)


@pytest.mark.parametrize("n", [68, 5])
def test_matches_dlib_descriptors(reference, ported, n: int) -> None:
    distance = np.linalg.norm(ported[n] - reference[f"descriptor{n}"], axis=1)
    worst = int(np.argmax(distance))
    assert distance.max() < TOLERANCE, (
        f"{n}-point: face {worst} ({reference['source'][worst]} frame {reference['frame'][worst]}) is "
        f"{distance[worst]:.2e} from dlib's descriptor; mean {distance.mean():.2e}")


@pytest.mark.parametrize("n", [68, 5])
def test_same_person_decisions_match_dlib(reference, ported, n: int) -> None:
    ours, theirs = ported[n], reference[f"descriptor{n}"]
    pairs = list(itertools.combinations(range(len(ours)), 2))
    same_ours = [np.linalg.norm(ours[i] - ours[j]) < THRESHOLD for i, j in pairs]
    same_theirs = [np.linalg.norm(theirs[i] - theirs[j]) < THRESHOLD for i, j in pairs]
    assert same_ours == same_theirs
    assert any(same_theirs) and not all(same_theirs)  # the fixture holds both kinds of pair


def test_matches_dlib_live(reference, net) -> None:
    """One face against the installed dlib, not the stored numbers: 68 landmarks and
    compute_face_descriptor in the test (from the fixture's detector box, to save a detection), on a large
    face whose chip dlib takes from its image pyramid."""
    dlib = pytest.importorskip("dlib")
    from deid.models.dlib_resnet import default_model_path, embed, face_chips, plan_chip
    from deid.models.landmarks import _model_paths
    predictor_path, encoder_path = _model_paths()
    assert encoder_path == default_model_path()
    image = load("identities/obama/2.jpg", -1)
    box = dlib.rectangle(*map(int, reference["box"][list(reference["source"]).index("identities/obama/2.jpg")]))
    shape = dlib.shape_predictor(str(predictor_path))(image, box)
    landmarks = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
    assert plan_chip(landmarks, image.shape).levels >= 1
    expected = np.array(dlib.face_recognition_model_v1(str(encoder_path)).compute_face_descriptor(image, shape, 1))
    np.testing.assert_array_equal(face_chips(image, [landmarks])[0].permute(1, 2, 0).numpy(),
                                  dlib.get_face_chip(image, shape, 150, 0.25))
    assert np.linalg.norm(embed(image, [landmarks], net=net)[0] - expected) < TOLERANCE


def test_gradients_reach_the_image(reference, net) -> None:
    """The point of the port: a descriptor distance can be back-propagated to the pixels (through dlib's
    truncations, straight through), while the forward pass stays dlib's."""
    from deid.models.dlib_resnet import face_chips, plan_chip
    image = torch.from_numpy(load("images/single_face.jpg", -1).transpose(2, 0, 1).copy()).float().requires_grad_()
    sources = list(reference["source"])
    row = sources.index("images/single_face.jpg")
    descriptor = net(face_chips(image, [reference["landmarks68"][row]]))[0]
    own = torch.from_numpy(reference["descriptor68"][row])
    assert torch.linalg.norm(descriptor - own).item() < TOLERANCE
    other = torch.from_numpy(reference["descriptor68"][sources.index("identities/obama/1.jpg")])
    torch.linalg.norm(descriptor - other).backward()  # e.g. pull this face towards another identity
    grad = image.grad.abs().sum(0)
    x0, y0, x1, y1 = reference["box"][row]
    assert (grad[y0:y1, x0:x1] > 0).float().mean() > 0.5
    left, top, right, bottom = plan_chip(reference["landmarks68"][row], image.shape[1:]).box
    grad[top:bottom + 1, left:right + 1] = 0
    assert not grad.any()  # nothing outside the region the chip is sampled from


def test_identity_model_decides_alike_with_either_backend(data_dir):
    """IdentityModel (what clean, evaluate, the leak check and the training monitor call) gives the same
    same/different decisions at 0.6 with the PyTorch port as with dlib's own network, on real faces of
    several people taken the way evaluate takes them (detector, 68 landmarks)."""
    import torch

    from deid.models.face_identity import FaceIdentity
    from deid.models.landmarks import IdentityModel
    from deid.stages.media import iter_frames, probe

    finder = FaceIdentity(torch.device("cpu"))
    faces = []
    for name in ("talking_1.mp4", "talking_2.mp4", "single_face.mp4", "WolfgangLanger_Pexels.mp4"):
        frames = [f for i, f in iter_frames(probe(data_dir / "video" / name), every=40) if i < 160]
        faces += [(f, lm) for f, lm in zip(frames, finder.largest_faces(frames)) if lm is not None]
    assert len(faces) >= 12
    port = IdentityModel(backend="torch").embed_many(faces)
    reference = np.stack([IdentityModel(backend="dlib").embed(f, lm) for f, lm in faces])
    assert np.linalg.norm(port - reference, axis=1).max() < 1e-3
    same = lambda e: np.linalg.norm(e[:, None] - e[None], axis=2) < 0.6  # noqa: E731
    assert (same(port) == same(reference)).all()
