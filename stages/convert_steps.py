"""Convert's steps after the plan, in the order a frame goes through them:

    swap -> mask -> colour -> paste -> protect (check identity, then hide)

Each is built once from the config and has one method, `process`: the swap takes a batch of frames (the
model runs on a batch), every other step one `FrameItem`, which it returns.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np
import torch

from deid.models.alignment import transform_points
from deid.models.landmarks import IdentityModel
from deid.stages.blend import Placement, compose, place, place_mask, soften_mask
from deid.stages.colour import COLOURS
from deid.stages.convert_inputs import Trained
from deid.stages.convert_plan import FramePlan, face_size, hull_box
from deid.stages.masks import FaceMask
from deid.stages.obfuscate import box_hull, box_region, face_region_mask, obfuscate
from deid.stages.train_data import frame_to_model, model_input


@dataclass
class FrameItem:
    """One frame on its way through the steps."""

    index: int
    frame: np.ndarray  # as decoded, never changed: the identity check measures the original person in it
    plan: FramePlan
    out: np.ndarray    # what will be written
    status: str
    reason: str
    swapped: bool = False
    learned: np.ndarray | None = None      # the model's own mask (float 0..1, output space), if it learns one
    matrix: np.ndarray | None = None       # frame px -> model output px
    placement: Placement | None = None     # the swapped face on the frame region it covers; None: nothing to paste
    distance: float | None = None          # identity distance of the pasted face from the original person
    reidentified: bool = False
    protected: int = 0                     # faces the fallback hid

    @classmethod
    def start(cls, index: int, frame: np.ndarray, plans: list[FramePlan]) -> FrameItem:
        """Frame `index` with its plan; one the alignments do not list is marked protected (convert then stops
        after the stream, because the alignments belong to a shorter video)."""
        plan = plans[index] if index < len(plans) else FramePlan(status="protected", reason="frame not in alignments")
        return cls(index=index, frame=frame, plan=plan, out=frame.copy(), status=plan.status, reason=plan.reason)


class FrameStep(Protocol):
    def process(self, item: FrameItem) -> FrameItem:
        """The item, carried one step further."""


class Swap:
    """swap: the target's face in each frame of a batch, cut at the model's crop, through encoder -> decoder B
    in one batch, and warped back onto the frame region it covers."""

    def __init__(self, trained: Trained) -> None:
        self._trained = trained

    def process(self, items: list[FrameItem]) -> list[FrameItem]:
        todo = [item for item in items if item.plan.target is not None]
        if not todo:
            return items
        trained, size = self._trained, self._trained.input_size
        crops = [model_input(item.frame, item.plan.target, size, trained.centering, trained.coverage) for item in todo]
        x = torch.from_numpy(np.stack(crops)).to(trained.device).permute(0, 3, 1, 2).float().div_(255)
        rgb, mask = trained.model(x, "b")
        faces = (rgb.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        learned = mask.float().clamp(0, 1)[:, 0].cpu().numpy() if mask is not None else [None] * len(faces)
        for item, face, own_mask in zip(todo, faces, learned):
            item.swapped, item.learned = True, own_mask
            item.matrix = frame_to_model(item.plan.target, trained.output_size, trained.centering, trained.coverage)
            item.placement = place(item.out.shape, face, item.matrix)
        return items


class Mask:
    """mask: which pixels of the swapped face are kept: a registered mask (stages/masks/), eroded and feathered
    in the model's output space, then warped onto the face's frame region."""

    def __init__(self, kind: FaceMask, erosion: float, blur: float, output_size: int) -> None:
        self._kind = kind
        self._erosion = erosion
        self._blur = blur
        self._size = output_size

    def process(self, item: FrameItem) -> FrameItem:
        if item.placement is None:
            return item
        landmarks = transform_points(item.plan.target, item.matrix)
        hard = self._kind.process(landmarks, self._size, item.learned)
        alpha = place_mask(item.placement, soften_mask(hard, self._erosion, self._blur))
        item.placement.alpha = alpha
        if not (alpha > 0.5).any():
            item.placement = None  # the mask covers nothing of the frame: the frame stays as it is
        return item


class Colour:
    """colour: the swapped face's colours matched to the frame under the mask (stages/colour/)."""

    def __init__(self, name: str) -> None:
        self._correction = COLOURS.get(name, "convert.color")()

    def process(self, item: FrameItem) -> FrameItem:
        placed = item.placement
        if placed is not None:
            placed.face = self._correction.process(placed.face, placed.region(item.out), placed.alpha > 0.5)
        return item


class Paste:
    """paste: the face blended into the frame under its feathered mask."""

    def process(self, item: FrameItem) -> FrameItem:
        if item.placement is not None:
            compose(item.out, item.placement)
        return item


class CheckIdentity:
    """check identity: a weak model can paste back a face that is still the original person. It is measured on
    the frame itself, before it is written; within `threshold` of the original, the swapped face is hidden
    by the fallback too (`escalate`; not with fallback none), so a bad swap degrades into protection, never
    into exposure."""

    def __init__(self, threshold: float, escalate: bool) -> None:
        self._identity = IdentityModel()
        self._originals = _OriginalIdentity(self._identity)
        self._threshold = threshold
        self._escalate = escalate

    def process(self, item: FrameItem) -> FrameItem:
        if not item.swapped:
            return item
        target = item.plan.target
        item.distance = float(np.linalg.norm(self._identity.embed(item.out, target).astype(np.float64)
                                             - self._originals.embedding(item.index, item.frame, target)))
        if item.distance < self._threshold and self._escalate:
            item.reidentified = True
            item.status = "swap-reidentified"
            why = f"swapped face {item.distance:.3f} from the original"
            item.reason = (item.reason + "; " if item.reason else "") + why
            item.plan.protect.append(target)  # the plan is what the leak check's solid-fill mask is built from
            item.plan.protect_sizes.append(face_size(target))
        return item


class _OriginalIdentity:
    """The original target's embedding, measured once every REFRESH frames while it stays in place.

    The person under the swap does not change from one frame to the next, and dlib's ResNet costs ~90 ms
    a face on 2 CPU cores; the swapped face itself is measured in every frame. A target that jumps (the
    largest face of an extract folder switching to another person) is measured again at once.
    """

    REFRESH = 5

    def __init__(self, identity: IdentityModel) -> None:
        self._identity = identity
        self._last: tuple[int, np.ndarray, np.ndarray] | None = None  # frame, landmark centre, embedding

    def embedding(self, index: int, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        centre, size = landmarks.mean(0), face_size(landmarks)
        if self._last is not None:
            at, where, embedding = self._last
            if 0 <= index - at < self.REFRESH and np.linalg.norm(centre - where) < 0.25 * size:
                return embedding
        embedding = self._identity.embed(frame, landmarks).astype(np.float64)
        self._last = (index, centre, embedding)
        return embedding


class Hide:
    """hide: every face the plan (or the identity check) marks gets the fallback obfuscation
    (stages/obfuscation/)."""

    def __init__(self, method: str, grow: float) -> None:
        self._method = method
        self._grow = grow

    def process(self, item: FrameItem) -> FrameItem:
        for region, size in hidden_regions(item.out.shape[:2], item.plan, self._grow):
            item.out = obfuscate(item.out, region, self._method, size)
            item.protected += 1
        return item


class LeaveInClear:
    """hide with fallback none: nothing is hidden; frames.csv counts the faces as unprotected and the leak
    check reports them."""

    def process(self, item: FrameItem) -> FrameItem:
        return item


def hidden_regions(shape: tuple[int, int], plan: FramePlan, grow: float) -> Iterator[tuple[np.ndarray, float]]:
    """(uint8 region mask, face size) of every face a frame's plan hides: hulls first, then the protection
    pass's boxes grown by `grow`."""
    for hull, size in zip(plan.protect, plan.protect_sizes):
        yield face_region_mask(shape, np.concatenate([hull, box_hull(hull_box(hull))]), grow=0.15), size
    for region in plan.guard:
        yield box_region(shape, region.box, grow), float(max(region.box[2] - region.box[0],
                                                             region.box[3] - region.box[1]))
