"""The verdict: three questions, each answered with its number, the worst answer first.

1. *Hidden*: is any sampled swapped frame still recognised as the original person (distance to the
   original's photo below the threshold), by the naive score or by the parrot attack? Swapped frames in
   which no face is found are not counted as hidden: they are reported.
2. *Became the donor*: in what share of the frames where the original shows a face does the swapped
   frame match the donor's photo? Below `donor_share` the output is an obfuscation, not a convincing swap.
3. *Expression kept*: AU PCC against `expression_pcc` when AU intensities were computed; else the
   calibrated landmark measure (reports/expression.py: passed, failed, or not judged when the original's
   expression barely changes); the averaged geometry PCC only for callers that give neither. And head-pose
   mean absolute error against `pose_mae` degrees: a pose not kept fails the axis whatever the expression.

The identity questions (1, 2) are asked of two recognisers: dlib's ResNet (the first: its numbers, the
parrot attack and `bars.threshold` are dlib's) and SFace (the second, models/second_recogniser.py, which
no training uses). A network trained against a recogniser can fool it, and only in one direction: into
calling the swap the donor and not the original. So a negative finding (re-identified, not the donor)
from either recogniser stands, while a positive one needs every judging recogniser: the swap is "the
donor" only when both reach `donor_share`, and "hidden" only when neither re-identifies the original.
When the swap model was trained with the identity term (against dlib), dlib's numbers are still shown,
labelled as the training recogniser, but only SFace can pass an identity question; without SFace the
question is not judged. When SFace is unavailable and dlib is independent, the finding says it rests on
one recogniser only. The text names the recogniser that disagreed.

Green only when all three hold. Red when the original person is re-identified. Amber otherwise: the
identity is hidden but the result is not a swap that keeps the expression (a smear, a solid mask).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from deid.models.face_distance import SAME_PERSON_DISTANCE

OK, WARN, BAD = "ok", "warn", "bad"
FIRST = "dlib"  # the first recogniser's short name: face_recognition's ResNet, the one training can use


@dataclass(frozen=True)
class Axis:
    name: str            # "hidden", "became the donor", "expression kept"
    passed: bool | None  # None: could not be judged (no data)
    finding: str         # one clause with the number, e.g. "SW-SW < 0.6 in 0 of 25 frames (bar: 50 %)"


@dataclass(frozen=True)
class Verdict:
    level: str  # ok | warn | bad
    text: str
    axes: tuple[Axis, ...]

    def as_json(self) -> dict[str, Any]:
        return {"level": self.level, "text": self.text,
                "axes": [{"name": a.name, "passed": a.passed, "finding": a.finding} for a in self.axes]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Verdict":
        return cls(str(data.get("level", BAD)), str(data.get("text", "")),
                   tuple(Axis(str(a["name"]), a.get("passed"), str(a.get("finding", ""))) for a in data.get("axes", [])))


@dataclass(frozen=True)
class Bars:
    threshold: float = SAME_PERSON_DISTANCE
    donor_share: float = 0.5
    expression_pcc: float = 0.5
    pose_mae: float = 5.0


def judge(reid: Mapping[str, Any], parrot: Mapping[str, Any], donor: Mapping[str, Any], geometry: Mapping[str, Any],
          au: Mapping[str, Any], bars: Bars, expression: Mapping[str, Any] | None = None,
          second: Mapping[str, Any] | None = None, trained_against_first: bool = False) -> Verdict:
    """reid: reports.identity.reidentification; donor: reports.identity.donor_match (both dlib's); geometry:
    the geometry summary (pose MAE); au: the AU summary (`computed`, `pcc_mean`); expression: the calibrated
    measure's summary (reports/expression.py: `judgement`, `finding`), used when AU was not computed.
    second: reports.identity.second_recogniser_summary, or {"available": False, "reason": ...}; None: not
    measured. trained_against_first: the swap model was trained against dlib (the identity term)."""
    second = dict(second) if second else {"available": False, "reason": "not measured"}
    axes = (_hidden_axis(reid, parrot, bars, second, trained_against_first),
            _donor_axis(donor, bars, second, trained_against_first), _expression(geometry, au, bars, expression))
    hidden, became, kept = axes
    level = BAD if hidden.passed is False else OK if all(a.passed for a in axes) else WARN
    failing = [a for a in axes if a.passed is not True]
    passing = [a for a in axes if a.passed is True]
    # Worst first: re-identification, then whatever else failed, then what held.
    clauses = [a.finding if a.passed is False else f"{a.name} not judged: {a.finding}" for a in failing]
    if became.passed is False and hidden.passed is not False:
        clauses.insert(0, "an obfuscation, not a convincing swap")
    clauses += [a.finding for a in passing]
    return Verdict(level, "; ".join(clauses), axes)


@dataclass(frozen=True)
class _Reading:
    """One recogniser's answer to one identity question."""

    who: str          # "dlib", "SFace"
    judges: bool      # False: the recogniser the model trained against; only its negative finding counts
    passed: bool | None
    finding: str
    role: str = ""    # " (independent)", " (the training recogniser)": said when training used dlib


def _combine(name: str, readings: Sequence[_Reading], alone: str, failed_prefix: str = "") -> Axis:
    """One axis from several recognisers' readings: a negative finding from any stands, a positive one
    needs every judge; the first clause is the deciding reading, then the others, each named."""
    judges = [r for r in readings if r.judges]
    if any(r.passed is False for r in readings):
        passed: bool | None = False
    elif not judges or any(r.passed is None for r in judges):
        passed = None
    else:
        passed = True
    order = sorted(readings, key=lambda r: (r.passed is not False, not r.judges))
    lead = order[0]
    parts = [f"{lead.finding} by {lead.who}{lead.role}"]
    for r in order[1:]:
        verb = "agrees" if r.passed == lead.passed else "disagrees"
        counted = "" if r.judges or r.passed is False else ", not counted,"  # a training recogniser's yes
        parts.append(f"{r.who}{r.role}{counted} {verb}: {r.finding}")
    text = "; ".join(parts) + (f"; {alone}" if alone else "")
    return Axis(name, passed, (failed_prefix if passed is False else "") + text)


def _readings(first: tuple[bool | None, str], second: Mapping[str, Any], second_answer: tuple[bool | None, str] | None,
              trained: bool) -> tuple[list[_Reading], str]:
    """Both recognisers' readings of one question, with who judges, and the note when one is missing."""
    short = str(second.get("short") or "SFace")
    if trained:
        readings = [_Reading(FIRST, False, *first, " (the training recogniser)")]
    else:
        readings = [_Reading(FIRST, True, *first)]
    if second_answer is None:
        reason = str(second.get("reason") or "unavailable")
        alone = (f"no independent recogniser to confirm it ({short} unavailable: {reason})" if trained else
                 f"rests on one recogniser only ({short} unavailable: {reason})")
        return readings, alone
    readings.append(_Reading(short, True, *second_answer, " (independent)" if trained else ""))
    return readings, ""


def _hidden_axis(reid: Mapping[str, Any], parrot: Mapping[str, Any], bars: Bars, second: Mapping[str, Any],
                 trained: bool) -> Axis:
    first = _hidden(reid, parrot, bars)
    answer = None
    if second.get("available"):
        answer = _hidden_similarity(second.get("reidentification") or {}, float(second["threshold"]))
    readings, alone = _readings((first.passed, first.finding), second, answer, trained)
    return _combine("hidden", readings, alone)


def _donor_axis(donor: Mapping[str, Any], bars: Bars, second: Mapping[str, Any], trained: bool) -> Axis:
    first = _donor_reading(donor, bars.donor_share, f"SW-SW < {bars.threshold:g}")
    answer = None
    if second.get("available"):
        answer = _donor_reading(second.get("donor") or {}, bars.donor_share,
                                f"cosine similarity >= {float(second['threshold']):g}")
    readings, alone = _readings(first, second, answer, trained)
    return _combine("became the donor", readings, alone, "not the donor: ")


def _hidden(reid: Mapping[str, Any], parrot: Mapping[str, Any], bars: Bars) -> Axis:
    sampled = int(reid.get("frames_sampled") or 0)
    with_face = int(reid.get("frames_with_face") or 0)
    hits = int(reid.get("frames_reidentified") or 0)
    missing = sampled - with_face
    uncounted = f" ({missing} swapped frames without a face, not counted as hidden)" if missing else ""
    if sampled == 0:
        return Axis("hidden", None, "no frame could be evaluated")
    parrot_hits = int(parrot.get("frames_reidentified") or 0) if parrot.get("applied") else 0
    if parrot_hits > hits:
        done = {"blur": "blurred", "pixelate": "pixelated"}.get(str(parrot.get("method")), str(parrot.get("method")))
        return Axis("hidden", False, f"re-identified in {parrot_hits}/{sampled} frames by a parrot attack (reference "
                                     f"{done} the same way; naive score: {hits}){uncounted}")
    if hits:
        times = list(reid.get("reidentified_times") or [])[:10]
        more = f" and {hits - len(times)} more" if hits > len(times) else ""
        return Axis("hidden", False, f"re-identified in {hits}/{with_face} frames with a face (distance to the "
                                     f"original's photo < {bars.threshold:g}) at {', '.join(times)}{more}{uncounted}")
    if with_face == 0:
        return Axis("hidden", True, f"no face found in any of the {sampled} swapped frames: nothing to re-identify")
    return Axis("hidden", True, f"identity hidden in {with_face}/{with_face} frames with a face (no distance to the "
                                f"original's photo < {bars.threshold:g}){uncounted}")


def _hidden_similarity(reid: Mapping[str, Any], threshold: float) -> tuple[bool | None, str]:
    """The second recogniser's re-identification (a similarity: the same person at or above the threshold)."""
    sampled = int(reid.get("frames_sampled") or 0)
    with_face = int(reid.get("frames_with_face") or 0)
    hits = int(reid.get("frames_reidentified") or 0)
    if sampled == 0:
        return None, "no frame could be evaluated"
    if hits:
        times = list(reid.get("reidentified_times") or [])[:5]
        more = f" and {hits - len(times)} more" if hits > len(times) else ""
        return False, (f"re-identified in {hits}/{with_face} frames with a face (cosine similarity to the "
                       f"original's photo >= {threshold:g}) at {', '.join(times)}{more}")
    if with_face == 0:
        return True, f"no face in any of the {sampled} swapped frames"
    return True, (f"identity hidden in {with_face}/{with_face} frames with a face (no cosine similarity to the "
                  f"original's photo >= {threshold:g})")


def _donor_reading(donor: Mapping[str, Any], share_bar: float, rule: str) -> tuple[bool | None, str]:
    frames = int(donor.get("frames") or 0)
    matched = int(donor.get("frames_matching_donor") or 0)
    if frames == 0:
        return None, "no frame where the original shows a face"
    share = matched / frames
    return share >= share_bar, (f"swapped face matches the donor ({rule}) in {matched}/{frames} frames "
                                f"({share:.0%}; bar {share_bar:.0%})")


def _expression(geometry: Mapping[str, Any], au: Mapping[str, Any], bars: Bars,
                expression: Mapping[str, Any] | None = None) -> Axis:
    pose = geometry.get("pose_mae")
    pose_ok = pose is None or pose <= bars.pose_mae
    pose_text = "pose MAE n/a" if pose is None else f"pose MAE {pose:.1f} deg (bar {bars.pose_mae:g})"
    if not (au.get("computed") and au.get("pcc_mean") is not None) and expression and expression.get("judgement"):
        return _calibrated(expression, pose_ok, pose_text)
    if au.get("computed") and au.get("pcc_mean") is not None:
        source, pcc = "AU PCC", float(au["pcc_mean"])
    elif geometry.get("geometry_pcc_mean") is not None:
        source, pcc = "expression geometry PCC", float(geometry["geometry_pcc_mean"])
    else:
        return Axis("expression kept", None, "no frame with a face in both videos to compare expressions")
    ok = pcc >= bars.expression_pcc and pose_ok
    lost = "" if ok else ("expression lost: " if pcc < bars.expression_pcc else "pose not kept: ")
    return Axis("expression kept", ok, f"{lost}{source} {pcc:.2f} (bar {bars.expression_pcc:g}), {pose_text}")


def _calibrated(expression: Mapping[str, Any], pose_ok: bool, pose_text: str) -> Axis:
    """The axis from reports/expression.py's judgement; a lost pose fails it even where expression is not judged."""
    judgement, finding = expression["judgement"], str(expression.get("finding") or expression.get("reason") or "")
    if judgement == "not judged":
        if not pose_ok:
            return Axis("expression kept", False, f"pose not kept: {pose_text}; expression not judged: {finding}")
        return Axis("expression kept", None, f"{finding}, {pose_text}")
    passed = judgement == "passed"
    lost = "" if passed and pose_ok else "expression lost: " if not passed else "pose not kept: "
    return Axis("expression kept", passed and pose_ok, f"{lost}landmark expression {judgement} ({finding}), {pose_text}")
