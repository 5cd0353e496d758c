"""The parrot attack: is the "de-identified" video a blur or pixelation of the original, and does it hold?

When the swapped face is the original's face degraded (detected by matching the original's face region,
degraded at every strength, against the swapped one), the attacker degrades a reference photo the same
way and re-identifies the swapped frames against it. Where the detector finds no face in a degraded
frame, the face position is taken from the original frame (a blurred head is easy to locate; position
carries no identity).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

PARROT_SAMPLE_FRAMES = 6
_BLUR_RATIOS = (0.03, 0.05, 0.08, 0.11, 0.14, 0.17, 0.21, 0.26, 0.33, 0.42)
_DEGRADED_RATIO = 0.3  # best degraded-original error below this share of the raw error = a degradation


FLAT_STD = 4.0  # grey-level standard deviation below which a face region carries no detail at all


def is_flat(frame: np.ndarray, landmarks: np.ndarray) -> bool:
    """Is the centre of the face (the middle 60 % of its landmark box: eyes, nose, mouth) featureless?"""
    (x0, y0), (x1, y1) = landmarks.min(0), landmarks.max(0)
    mx, my = 0.2 * (x1 - x0), 0.2 * (y1 - y0)
    x0, y0, x1, y1 = int(x0 + mx), int(y0 + my), int(np.ceil(x1 - mx)), int(np.ceil(y1 - my))
    region = frame[max(0, y0):max(0, y1), max(0, x0):max(0, x1)]
    return region.size == 0 or float(cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_RGB2GRAY).std()) < FLAT_STD

def face_size(lm: np.ndarray) -> float:
    return float(max(np.ptp(lm[:, 0]), np.ptp(lm[:, 1]), 1.0))


_ESTIMATE_FRAMES = 12


def degrade(image: np.ndarray, method: str, strength: float, face_size: float) -> np.ndarray:
    """Blur (sigma) or pixelate (block) the whole image, strength relative to the face size."""
    if method == "blur":
        return cv2.GaussianBlur(image, (0, 0), max(0.5, strength * face_size))
    block = max(2, int(round(strength * face_size)))
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // block), max(1, h // block)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def _degrade_region(image: np.ndarray, method: str, strength: float, face_size: float,
                    region: tuple[slice, slice]) -> np.ndarray:
    """degrade(image)[region], computing a blur only on the region plus a 3-sigma margin."""
    if method != "blur":
        return degrade(image, method, strength, face_size)[region]
    sigma = max(0.5, strength * face_size)
    margin = int(math.ceil(3 * sigma))
    ys, xs = region
    y0, x0 = max(0, ys.start - margin), max(0, xs.start - margin)
    y1, x1 = min(image.shape[0], ys.stop + margin), min(image.shape[1], xs.stop + margin)
    blurred = _fast_gaussian(image[y0:y1, x0:x1], sigma)
    return blurred[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]


def _fast_gaussian(image: np.ndarray, sigma: float, small_sigma: float = 4.0) -> np.ndarray:
    """A Gaussian blur whose cost does not grow with sigma: blur a downscaled copy and scale it back.

    Only for estimating which blur strength a tool used (a 200 px sigma costs ~0.75 s per frame done
    directly); the degraded reference itself is made with the exact blur.
    """
    if sigma <= 2 * small_sigma:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    factor = sigma / small_sigma
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), small_sigma, borderType=cv2.BORDER_REFLECT_101)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def estimate_degradation(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                         methods: tuple[str, ...] = ("blur", "pixelate")) -> dict:
    """Is `swapped` the original, blurred or pixelated? pairs: (original, swapped, original landmarks).

    Each frame gets its own best strength: tools set the strength from each frame's face box (deid's own
    pixelation uses int(box side / 6) px blocks), so one ratio for the whole clip misses by a pixel of
    block in half the frames and a pixelation looked like "not a pixelation". Pixelation is searched at
    every whole block size, blur on a grid refined by golden-section search, so any strength in between
    is found. The method whose per-frame best errors sum lowest wins; its strength is their median.
    """
    if not pairs:
        return {"method": None, "reason": "no frame with a face in the original to compare"}
    # A tool degrades every frame alike: a dozen frames spread over the video settle the method and strength.
    pairs = pairs[:: max(1, len(pairs) // _ESTIMATE_FRAMES)][:_ESTIMATE_FRAMES]
    raw = flat = 0.0
    totals = {m: 0.0 for m in methods}
    strengths: dict[str, list[float]] = {m: [] for m in methods}
    for orig, swap, lm in pairs:
        x0, y0 = np.floor(lm.min(0)).astype(int)
        x1, y1 = np.ceil(lm.max(0)).astype(int)
        region = (slice(max(0, y0), max(0, y1)), slice(max(0, x0), max(0, x1)))
        target = swap[region].astype(np.float32)
        raw += float(np.mean((orig[region].astype(np.float32) - target) ** 2))
        flat += float(np.mean((target - target.reshape(-1, 3).mean(0)) ** 2))
        size = face_size(lm)

        def error(method: str, ratio: float) -> float:
            degraded = _degrade_region(orig, method, ratio, size, region).astype(np.float32)
            return float(np.mean((degraded - target) ** 2))

        for method in methods:
            best_ratio, best = _best_strength(method, size, error)
            totals[method] += best
            strengths[method].append(best_ratio)
    n = len(pairs)
    raw, flat = raw / n, flat / n
    method = min(totals, key=totals.get)
    best = totals[method] / n
    ratio = round(float(np.median(strengths[method])), 4)
    result = {"raw_mse": round(raw, 3), "best_mse": round(best, 3), "best_method": method, "best_strength": ratio,
              "frames": n}
    if raw < 1.0:
        return {**result, "method": None, "reason": "the swapped face region is identical to the original"}
    if best > _DEGRADED_RATIO * raw:
        return {**result, "method": None,
                "reason": f"not a blur or pixelation of the original (best match keeps {best / raw:.0%} of the difference)"}
    if flat < 1e-6:
        # One colour over the whole face region (a solid fill, or a mismatched pair's flat patch): nothing
        # of the original's detail is left to blur, and the ratio below would divide by zero.
        return {**result, "method": None, "reason": "the swapped face region is one flat colour, not a blur or "
                                                    "pixelation of the original"}
    if best > _DEGRADED_RATIO * flat:
        # The strongest candidates are nearly flat and "explain" any change a little: a degradation must
        # explain the swapped face far better than its own mean colour does.
        return {**result, "method": None,
                "reason": f"not a blur or pixelation of the original (best match no better than a flat fill: "
                          f"{best / flat:.0%} of its error)"}
    return {**result, "method": method, "strength": ratio}


def _best_strength(method: str, size: float, error) -> tuple[float, float]:
    """(ratio, error) of the strength that best explains one frame."""
    if method == "pixelate":
        blocks = range(2, max(3, int(0.6 * size)) + 1)
        return min(((b / size, error(method, b / size)) for b in blocks), key=lambda t: t[1])
    grid = [(r, error(method, r)) for r in _BLUR_RATIOS]
    k = min(range(len(grid)), key=lambda i: grid[i][1])
    lo = grid[max(0, k - 1)][0] if k > 0 else _BLUR_RATIOS[0] / 2
    hi = grid[min(len(grid) - 1, k + 1)][0] if k < len(grid) - 1 else _BLUR_RATIOS[-1] * 1.5
    golden = (np.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = error(method, a), error(method, b)
    for _ in range(8):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = error(method, a)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = error(method, b)
    return min([grid[k], (a, fa), (b, fb)], key=lambda t: t[1])


Embed = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class ParrotEvidence:
    """What the identity pass keeps for the attack: a few frame pairs, and swapped-face embeddings taken at
    the original's landmarks where the detector found no face in the swapped frame."""

    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # original, swapped, landmarks
    borrowed: dict[int, np.ndarray] = field(default_factory=dict)  # sample position -> embedding

    def wants_pair(self) -> bool:
        return len(self.pairs) < PARROT_SAMPLE_FRAMES


def parrot_attack(mode: str, evidence: ParrotEvidence, swapped_embeddings: np.ndarray,
                  reference: tuple[np.ndarray, np.ndarray], embed: Embed) -> dict:
    """Estimate the degradation, degrade the original's reference photo the same way, and measure the
    distance of every swapped frame to it. `reference` is (photo, its landmarks). Returns the summary's
    `parrot` section plus `_distances` / `_borrowed` arrays for the per-frame table."""
    if mode == "none":
        return {"applied": False, "mode": "none", "reason": "disabled (evaluate.parrot: none)"}
    methods = ("blur", "pixelate") if mode == "auto" else (mode,)
    estimate = estimate_degradation(evidence.pairs, methods)
    if mode == "auto" and estimate.get("method") is None:
        return {"applied": False, "mode": "auto", "estimate": estimate,
                "reason": f"no parrot attack: {estimate.get('reason')}"}
    method = estimate.get("method") or estimate.get("best_method") or mode
    strength = estimate.get("strength") or estimate.get("best_strength")
    if strength is None:
        return {"applied": False, "mode": mode, "estimate": estimate, "reason": estimate.get("reason")}
    image, landmarks = reference
    ref_emb = embed(degrade(image, method, strength, face_size(landmarks)), landmarks)  # the attacker knows
    emb = np.array(swapped_embeddings, np.float64, copy=True)                          # his own photo's face
    borrowed = np.zeros(len(emb), bool)
    for pos, e in evidence.borrowed.items():
        emb[pos] = e
        borrowed[pos] = True
    distances = np.linalg.norm(emb - np.asarray(ref_emb, np.float64)[None, :], axis=1)
    return {"applied": True, "mode": mode, "method": method, "strength": strength,
            "strength_meaning": "sigma / face size" if method == "blur" else "block / face size",
            "estimate": estimate, "frames_face_borrowed": int(borrowed.sum()),
            "_distances": distances, "_borrowed": borrowed}


def parrot_explanation(parrot: dict, naive: dict) -> str:
    p, n = parrot.get("frames_reidentified", 0), naive.get("frames_reidentified", 0)
    if p > n:
        return (f"the parrot attack re-identifies {p} frames where the naive score finds {n}: the "
                f"{parrot['method']} hides the face from a recogniser fed clean photos, not from one fed "
                f"photos degraded the same way")
    mean = (parrot.get("SW-OR") or {}).get("mean")
    return (f"the parrot attack re-identifies {p} frames (naive: {n}): the {parrot['method']} at strength "
            f"{parrot['strength']:g} leaves too little of the face for face_recognition even against a degraded "
            f"reference (mean distance {mean if mean is None else round(mean, 3)}); a stronger recogniser "
            f"trained on degraded faces may still succeed")


