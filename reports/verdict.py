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

Green only when all three hold. Red when the original person is re-identified. Amber otherwise: the
identity is hidden but the result is not a swap that keeps the expression (a smear, a solid mask).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

OK, WARN, BAD = "ok", "warn", "bad"


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
    threshold: float = 0.6
    donor_share: float = 0.5
    expression_pcc: float = 0.5
    pose_mae: float = 5.0


def judge(reid: Mapping[str, Any], parrot: Mapping[str, Any], donor: Mapping[str, Any], geometry: Mapping[str, Any],
          au: Mapping[str, Any], bars: Bars, expression: Mapping[str, Any] | None = None) -> Verdict:
    """reid: reports.identity.reidentification; donor: reports.identity.donor_match; geometry: the geometry
    summary (pose MAE); au: the AU summary (`computed`, `pcc_mean`); expression: the calibrated measure's
    summary (reports.expression: `judgement`, `finding`), used when AU was not computed."""
    axes = (_hidden(reid, parrot, bars), _donor(donor, bars), _expression(geometry, au, bars, expression))
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


def _donor(donor: Mapping[str, Any], bars: Bars) -> Axis:
    frames = int(donor.get("frames") or 0)
    matched = int(donor.get("frames_matching_donor") or 0)
    if frames == 0:
        return Axis("became the donor", None, "no frame where the original shows a face")
    share = matched / frames
    finding = (f"swapped face matches the donor (SW-SW < {bars.threshold:g}) in {matched}/{frames} frames "
               f"({share:.0%}; bar {bars.donor_share:.0%})")
    return Axis("became the donor", share >= bars.donor_share, ("not the donor: " if share < bars.donor_share else "")
                + finding)


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
