"""AU tables (real py-feat and OpenFace outputs), identity arithmetic, geometry, HTML and compare: no models run."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from deid.core.errors import ConfigError, DeidError
from deid.reports import au
from deid.reports.compare import compare
from deid.reports.geometry import frame_geometry, geometry_preservation, geometry_table
from deid.reports.html import render_report
from deid.reports.identity import donor_match
from deid.reports.summary import EvaluationSummary
from deid.reports.verdict import Bars, Verdict, judge
from deid.reports.identity import format_time, identity_frame_table, rank_identification, reidentification
from deid.stages.evaluate_config import EvaluateConfig


@pytest.fixture(scope="module")
def openface(data_dir):
    return au.read_au_table(data_dir / "openface" / "OpenFace_Test.csv", "openface")


@pytest.fixture(scope="module")
def pyfeat(data_dir):
    return (au.read_au_table(data_dir / "pyfeat" / "001.csv", "pyfeat-csv"),
            au.read_au_table(data_dir / "pyfeat" / "002.csv", "pyfeat-csv"))


def test_openface_parsed_all_au_r_columns_zero_based(openface, data_dir):
    raw = pd.read_csv(data_dir / "openface" / "OpenFace_Test.csv")
    expected = sorted(c.strip()[:-2] for c in raw.columns if re.match(r"^\s*AU\d\d_r$", c))
    assert list(openface.columns) == expected and len(expected) == 17
    assert openface.index[0] == 0 and len(openface) == len(raw)  # frame 1 -> index 0
    assert openface["AU01"].iloc[0] == pytest.approx(float(raw[" AU01_r"].iloc[0]))


def test_openface_self_comparison_and_constant_columns(openface):
    table, summary = au.compare_tables(openface, openface)
    defined = table[table["pcc_defined"]]
    assert np.allclose(defined["pcc"].astype(float), 1.0) and np.allclose(table["rmse"].astype(float), 0.0)
    # AU06, AU10, ... are constant in this clip: PCC undefined, counted, kept out of the mean.
    assert set(summary["pcc_undefined"]) >= {"AU06", "AU10", "AU12"}
    assert summary["pcc_n"] + len(summary["pcc_undefined"]) == 17
    assert summary["pcc_mean"] == pytest.approx(1.0) and summary["rmse_mean"] == 0.0
    assert np.isfinite(summary["pcc_sd"])


def test_openface_failed_frames_become_nan(tmp_path, data_dir):
    raw = pd.read_csv(data_dir / "openface" / "OpenFace_Test.csv")
    raw.loc[3, " success"] = 0
    raw.loc[5, " confidence"] = 0.1
    path = tmp_path / "of.csv"
    raw.to_csv(path, index=False)
    table = au.read_au_table(path, "openface")
    assert table.loc[[3, 5]].isna().all().all() and table.loc[4].notna().all()
    a, b, info = au.align_tables(table, au.read_au_table(data_dir / "openface" / "OpenFace_Test.csv", "openface"))
    assert info["failed_original"] == 2 and info["frames_paired"] == len(raw) - 2


def test_pyfeat_tables_align_on_frame(pyfeat):
    a, b = pyfeat
    assert list(a.columns)[0] == "AU01" and list(a.columns)[-1] == "AU43" and len(a.columns) == 20
    table, summary = au.compare_tables(a, b)
    info = summary["alignment"]
    assert info["frames_original"] == 40 and info["frames_swapped"] == 28 and info["frames_common"] == 28
    assert info["frames_only_original"] == 12
    assert summary["pcc_undefined"] == ["AU20"]  # constant 1.0 in 001.csv
    assert summary["pcc_n"] == 19 and np.isfinite(summary["pcc_mean"]) and np.isfinite(summary["rmse_mean"])
    # the arithmetic, by hand on one AU over the aligned frames
    x, y = a.loc[b.index, "AU01"].to_numpy(), b["AU01"].to_numpy()
    row = table.set_index("au").loc["AU01"]
    assert row["pcc"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert row["rmse"] == pytest.approx(np.sqrt(np.mean((x - y) ** 2)))
    self_table, self_summary = au.compare_tables(a, a)
    assert self_summary["pcc_mean"] == pytest.approx(1.0) and self_summary["rmse_mean"] == 0.0


def test_pyfeat_alignment_uses_frame_numbers_not_row_order(pyfeat):
    a, _ = pyfeat
    shifted = a.iloc[::-1].copy()
    shifted.index = shifted.index + 5  # frames 5..44 in reverse row order
    x, y, info = au.align_tables(a, shifted)
    assert info["frames_common"] == 35 and list(x.index) == list(range(5, 40))
    assert np.allclose(x.to_numpy(), a.loc[5:39].to_numpy()) and np.allclose(y.to_numpy(), a.loc[0:34].to_numpy())


def test_pyfeat_feat_test_one_row_and_multi_face(tmp_path, data_dir):
    one = au.read_au_table(data_dir / "pyfeat" / "Feat_Test.csv", "pyfeat-csv")
    assert len(one) == 1
    raw = pd.read_csv(data_dir / "pyfeat" / "001.csv").head(3)
    small = raw.copy()
    small["FaceRectWidth"] = 10.0
    small["AU01"] = 9.0
    path = tmp_path / "multi.csv"
    pd.concat([small, raw]).to_csv(path, index=False)
    table = au.read_au_table(path, "pyfeat-csv")
    assert len(table) == 3 and np.allclose(table["AU01"], raw["AU01"])  # the largest face wins


def test_pcc_undefined_cases():
    assert au.pcc_rmse(np.ones(5), np.arange(5.0))[0] is None
    assert au.pcc_rmse(np.array([1.0]), np.array([2.0])) == (None, 1.0, 1)
    assert au.pcc_rmse(np.array([np.nan, np.nan]), np.array([1.0, 2.0])) == (None, None, 0)
    summary = au.summarize(pd.DataFrame({"au": ["a", "b"], "pcc": [None, None], "rmse": [0.1, 0.3]}))
    assert summary["pcc_mean"] is None and summary["pcc_n"] == 0 and summary["rmse_mean"] == pytest.approx(0.2)


def test_bad_au_table_is_one_line_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DeidError, match="AU"):
        au.read_au_table(path, "pyfeat-csv")
    with pytest.raises(DeidError, match="not found"):
        au.read_au_table(tmp_path / "missing.csv", "openface")


def test_config_validation():
    with pytest.raises(ConfigError, match="evaluate.frames"):
        EvaluateConfig(frames=0)
    with pytest.raises(ConfigError, match="evaluate.au"):
        EvaluateConfig(au="openfac")
    with pytest.raises(ConfigError, match="evaluate.au_original"):
        EvaluateConfig(au="openface")
    with pytest.raises(ConfigError, match="evaluate.threshold"):
        EvaluateConfig(threshold="0.6")
    assert EvaluateConfig(au="none", au_original="x.csv").au_original.name == "x.csv"


def _identity_table():
    rng = np.random.default_rng(0)
    ref_o, ref_d = rng.normal(size=128), rng.normal(size=128)
    orig = ref_o + 0.01 * rng.normal(size=(10, 128))
    swap = ref_d + 0.01 * rng.normal(size=(10, 128))
    swap[3] = ref_o  # re-identified at frame 30
    swap[7] = np.nan  # no face
    return identity_frame_table(np.arange(10) * 10, np.arange(10) * 10 / 25.0, orig, swap, ref_o, ref_d), ref_o, ref_d


def test_identity_reid_and_times():
    table, _, _ = _identity_table()
    reid = reidentification(table, 0.6)
    assert reid["frames_reidentified"] == 1 and reid["reidentified_frames"] == [30]
    assert reid["reidentified_times"] == ["0:01.2"] and reid["no_face_share"] == pytest.approx(0.1)
    assert reid["reid_rate"] == pytest.approx(0.1) and reid["reid_rate_detected"] == pytest.approx(1 / 9)
    verdict = judge(reid, {"applied": False}, donor_match(table, 0.6), {"geometry_pcc_mean": 0.9, "pose_mae": 1.0},
                    {"computed": False}, Bars())
    assert verdict.level == "bad" and verdict.text.startswith("re-identified in 1/9 frames with a face")
    assert "0:01.2" in verdict.text
    assert format_time(754.25) == "12:34.2" and format_time(3600) == "1:00:00.0"


def test_rank_identification():
    table, ref_o, ref_d = _identity_table()
    rng = np.random.default_rng(1)
    gallery = {"orig": ref_o[None], "donor": ref_d[None], **{f"p{i}": rng.normal(size=(2, 128)) for i in range(6)}}
    swap = np.stack([ref_d] * 9 + [ref_o])
    r = rank_identification(swap, gallery, "orig")
    assert r["rank1"] == pytest.approx(0.1) and r["rank5"] == pytest.approx(1.0) and r["top1_counts"]["donor"] == 9


def test_geometry_self_is_perfect_and_pose_sane(data_dir):
    from tests.test_evaluate import _landmarks_of_image
    lm = _landmarks_of_image(data_dir / "images" / "single_face.jpg")
    g = frame_geometry(lm)
    assert abs(g["yaw"]) < 30 and abs(g["roll"]) < 20 and 0.05 < g["eye_aperture"] < 0.6
    rng = np.random.default_rng(0)
    seq = [lm + rng.normal(scale=2.0, size=lm.shape) for _ in range(8)] + [None]
    table = geometry_table(seq, list(range(9)))
    per, summary = geometry_preservation(table, table)
    assert summary["geometry_pcc_mean"] == pytest.approx(1.0) and summary["geometry_rmse_mean"] == 0.0
    assert summary["pose_mae"] == 0.0 and summary["frames_paired"] == 8


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls, self.first = [], None
        self.in_body = False

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.in_body = True
        elif self.in_body and self.first is None:
            self.first = (tag, dict(attrs))
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def check_report_html(text: str) -> _Collect:
    parser = _Collect()
    parser.feed(text)
    assert not [u for u in parser.urls if re.match(r"(?i)\s*(https?:)?//", u)]
    assert all(u.startswith("data:") for u in parser.urls)
    assert parser.first[0] == "p" and parser.first[1].get("id") == "verdict"
    assert "<link" not in text and "@import" not in text and "<script" not in text
    return parser


def test_render_report_offline():
    text = render_report("t", ("identity hidden in 1/1 frames", "ok"), [("A", "<p>x</p>")])
    check_report_html(text)


def _summary(name: str, sw_or: float, reid: float, pcc: float | None, level: str = "ok") -> EvaluationSummary:
    return EvaluationSummary(
        name=name, original="o.mp4", swapped="s.mp4", ref_original="a.jpg", ref_donor="b.jpg", frames_total=100,
        frames_sampled=100, seed=0, fps=25.0, threshold=0.6, verdict=Verdict(level, f"{name} verdict", ()),
        identity={"comparisons": {"SW-OR": {"mean": sw_or, "sd": 0.1}, "SW-SW": {"mean": 0.5, "sd": 0.05}},
                  "reidentification": {"reid_rate": reid, "no_face_share": 0.0, "frames_sampled": 100},
                  "donor": {"share": 0.8}},
        parrot={"applied": False}, geometry={"pose_mae": 1.5, "geometry_pcc_mean": 0.9, "geometry_pcc_sd": 0.05},
        au={"computed": pcc is not None, "source": "openface", "pcc_mean": pcc, "pcc_sd": 0.05, "rmse_mean": 0.2,
            "rmse_sd": 0.1, "reason": "disabled"})


def test_compare_shows_each_runs_own_threshold(tmp_path):
    # A run evaluated at a stricter threshold keeps it in compare's table and figure, not a fixed 0.6.
    import dataclasses

    for name, threshold in (("default", 0.6), ("strict", 0.5)):
        (tmp_path / name).mkdir()
        summary = dataclasses.replace(_summary(name, 0.7, 0.0, 0.8), threshold=threshold)
        (tmp_path / name / "summary.json").write_text(json.dumps(summary.as_json()))
        (tmp_path / name / "identity.csv").write_text("frame,OR-OR,OR-SW,SW-OR,SW-SW\n0,0.3,0.8,0.7,0.5\n")
    table = compare([tmp_path / "default", tmp_path / "strict"], tmp_path / "out")
    assert list(table["threshold"]) == ["0.6", "0.5"]
    page = (tmp_path / "out" / "compare.html").read_text()
    assert "identity distances per run" in page and "the run's threshold" in page


def test_compare_table(tmp_path):
    for name, args in {"faceswap": (0.72, 0.02, 0.78), "blur": (0.9, 0.0, None)}.items():
        (tmp_path / name / "reports").mkdir(parents=True)
        (tmp_path / name / "reports" / "summary.json").write_text(json.dumps(_summary(name, *args).as_json()))
    table = compare([tmp_path / "faceswap", tmp_path / "blur" / "reports"], tmp_path / "out")
    assert list(table["name"]) == ["faceswap", "blur"]
    assert table.loc[0, "SW-OR"] == "0.720 ± 0.100" and table.loc[0, "AU PCC"] == "0.780 ± 0.050"
    assert table.loc[0, "SW-SW"] == "0.500 ± 0.050" and table.loc[0, "donor match"] == "80.0 %"
    assert table.loc[0, "verdict"] == "OK: faceswap verdict"
    assert table.loc[1, "AU PCC"] == "n/a" and "not computed" in table.loc[1, "AU source"]
    assert (tmp_path / "out" / "compare.md").read_text().startswith("| name | verdict | OR-OR |")
    assert pd.read_csv(tmp_path / "out" / "compare.csv").shape == (2, len(table.columns))
    with pytest.raises(DeidError, match="summary.json"):
        compare([tmp_path / "nothing"], tmp_path / "out2")
    (tmp_path / "old" / "summary.json").parent.mkdir()
    (tmp_path / "old" / "summary.json").write_text(json.dumps({"name": "old", "verdict": "identity hidden"}))
    with pytest.raises(DeidError, match="older deid evaluate"):
        compare([tmp_path / "old"], tmp_path / "out3")


def test_verdict_three_axes_worst_first():
    hidden = {"frames_sampled": 25, "frames_with_face": 25, "frames_reidentified": 0}
    smear = judge(hidden, {"applied": False}, {"frames": 25, "frames_matching_donor": 0},
                  {"geometry_pcc_mean": 0.03, "pose_mae": 4.9}, {"computed": False}, Bars())
    assert smear.level == "warn" and smear.text.startswith("an obfuscation, not a convincing swap; not the donor")
    assert "expression lost: expression geometry PCC 0.03" in smear.text and "0/25 frames" in smear.text
    good = judge(hidden, {"applied": False}, {"frames": 25, "frames_matching_donor": 20},
                 {"geometry_pcc_mean": 0.9, "pose_mae": 1.0}, {"computed": True, "pcc_mean": 0.8}, Bars())
    assert good.level == "ok" and all(a.passed for a in good.axes) and "AU PCC 0.80" in good.text
    faceless = judge({"frames_sampled": 10, "frames_with_face": 0, "frames_reidentified": 0}, {"applied": False},
                     {"frames": 10, "frames_matching_donor": 0}, {"geometry_pcc_mean": None}, {"computed": False},
                     Bars())
    assert faceless.level == "warn" and "not judged" in faceless.text
    parrot = judge({**hidden, "frames_reidentified": 1}, {"applied": True, "method": "pixelate",
                                                          "frames_reidentified": 9}, {"frames": 25},
                   {"geometry_pcc_mean": 0.9, "pose_mae": 1.0}, {"computed": False}, Bars())
    assert parrot.level == "bad" and parrot.text.startswith("re-identified in 9/25 frames by a parrot attack "
                                                            "(reference pixelated")


def test_verdict_uses_the_calibrated_expression_measure_without_au():
    """Without AU the calibrated measure decides; not judged stays not judged unless the pose is lost."""
    hidden = {"frames_sampled": 25, "frames_with_face": 25, "frames_reidentified": 0}
    donor = {"frames": 25, "frames_matching_donor": 20}
    geometry = {"geometry_pcc_mean": 0.1, "pose_mae": 1.0}  # the averaged PCC no longer decides
    passed = {"judgement": "passed", "finding": "1 of 4 measures informative: mouth_open r 0.95"}
    ok = judge(hidden, {"applied": False}, donor, geometry, {"computed": False}, Bars(), passed)
    assert ok.level == "ok" and "landmark expression passed (1 of 4 measures informative" in ok.text
    failed = judge(hidden, {"applied": False}, donor, geometry, {"computed": False}, Bars(),
                   {"judgement": "failed", "finding": "mouth_open r 0.05 (null -0.5..0.5)"})
    assert failed.level == "warn" and "expression lost: landmark expression failed" in failed.text
    still = {"judgement": "not judged", "finding": "the original's expression barely changes"}
    unjudged = judge(hidden, {"applied": False}, donor, geometry, {"computed": False}, Bars(), still)
    assert unjudged.axes[2].passed is None
    assert "expression kept not judged: the original's expression barely changes" in unjudged.text
    lost_pose = judge(hidden, {"applied": False}, donor, {**geometry, "pose_mae": 12.8}, {"computed": False}, Bars(),
                      still)
    assert lost_pose.axes[2].passed is False and "pose not kept: pose MAE 12.8" in lost_pose.text
    au_first = judge(hidden, {"applied": False}, donor, geometry, {"computed": True, "pcc_mean": 0.8}, Bars(), still)
    assert au_first.axes[2].passed is True and "AU PCC 0.80" in au_first.text


def test_expression_measure_on_series_with_known_answers():
    """The arithmetic: a copy passes, a constant face fails inside its null band, pose is regressed out."""
    from deid.reports.expression import MEASURES, expression_preservation

    rng = np.random.default_rng(3)
    n = 40
    pose = pd.DataFrame({"yaw": rng.normal(0, 5, n), "pitch": rng.normal(0, 3, n), "roll": rng.normal(0, 2, n)})
    signal = np.sin(np.linspace(0, 6 * np.pi, n))
    original = pd.DataFrame({m: 0.3 + 0.05 * signal + 0.004 * pose["yaw"] for m in MEASURES})
    noise = {m: 0.002 for m in MEASURES}
    copy = original + rng.normal(0, 0.002, original.shape)
    table, summary = expression_preservation(original, copy, pose, noise)
    assert summary["judgement"] == "passed" and summary["informative"] == list(MEASURES)
    assert all(0.9 < g < 1.1 for g in table["gain"]) and all(table["pose_r2"] > 0.2)
    frozen = pd.DataFrame({m: np.full(n, 0.3) for m in MEASURES})
    table, summary = expression_preservation(original, frozen, pose, noise)
    assert summary["judgement"] == "failed"
    assert all(abs(r) < 1e-9 and lo <= r <= hi for r, lo, hi in zip(table["r"], table["null_low"], table["null_high"]))
    halved = pd.DataFrame({m: 0.3 + 0.02 * signal for m in MEASURES})  # the movement at 40 %: r stays, gain says it
    assert expression_preservation(original, halved, pose, noise)[1]["judgement"] == "failed"
    quiet = {m: 0.05 for m in MEASURES}
    assert expression_preservation(original, copy, pose, quiet)[1]["judgement"] == "not judged"
    short = expression_preservation(original.head(5), copy.head(5), pose.head(5), noise)[1]
    assert short["judgement"] == "not judged" and "5 distinct frames" in short["reason"]


def test_compare_shows_the_expression_headline(tmp_path):
    summary = _summary("swap", 0.72, 0.0, None)
    summary.expression = {"judgement": "passed", "informative": ["mouth_open"], "r_min": 0.91, "gain_min": 0.9,
                          "gain_max": 0.9}
    (tmp_path / "swap").mkdir()
    (tmp_path / "swap" / "summary.json").write_text(json.dumps(summary.as_json()))
    table = compare([tmp_path / "swap"], tmp_path / "out")
    assert table.loc[0, "landmark expression"] == "passed, r min 0.91 over 1 measure, gain 0.90..0.90"


# The 3dmm metric's summary of a real run (3DDFA_V2 on tests/data: the donor face with the original's
# expression, 10 sampled frames), copied from its summary.json.
REAL_3DMM = {
    "description": "3DMM expression error: L2 distance of 3DDFA_V2's 10 expression coefficients, swapped vs "
                   "original (lower = kept); pose error (deg) and per-coefficient PCC in the summary",
    "computed": True, "n": 10, "mean": 0.12349781043492727, "median": 0.1315422511694438,
    "max": 0.2019474552530195, "min": 0.04028109153432627, "model": "3DDFA_V2 mb05 (MIT), never used in training",
    "pose_error_mean": 0.17488265609516798, "pose_error_median": 0.16059022696076872,
    "pose_error_max": 0.4114124412397757, "pose_error_yaw": 0.12914499122701956,
    "pose_error_pitch": 0.2712542791383328, "pose_error_roll": 0.12424869792015159,
    "pcc": {"exp01": 0.9769289777773906, "exp02": 0.9887744747695304, "exp03": 0.9713189934162998,
            "exp04": 0.9837176584135915, "exp05": 0.9686590384478845, "exp06": 0.8241104074188171,
            "exp07": 0.9735338491794072, "exp08": 0.981289939638403, "exp09": 0.9787671403144583,
            "exp10": 0.9777539958039282},
    "pcc_mean": 0.9624854475179712, "pcc_frames": 10}
# ... and of a run where no sampled pair had a face in both (a blurred swap).
NOT_COMPUTED_3DMM = {"description": REAL_3DMM["description"], "computed": False,
                     "reason": "no sampled frame pair had what this metric needs (a face in both)", "n": 0,
                     "model": "3DDFA_V2 mb05 (MIT), never used in training"}


def test_compare_and_report_show_the_3dmm_metric(tmp_path):
    from deid.reports.evaluate_html import _metrics

    runs = {"swap": REAL_3DMM, "blur": NOT_COMPUTED_3DMM, "older": None}
    for name, metric in runs.items():
        summary = _summary(name, 0.72, 0.0, 0.78)
        summary.au["source"] = "blendshapes"
        if metric is not None:
            summary.metrics = {"3dmm": metric, "face_ssim": {"computed": True, "n": 10, "mean": 0.91, "median": 0.92,
                                                           "min": 0.85, "max": 0.95}}
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary.as_json()))
    table = compare([tmp_path / n for n in runs], tmp_path / "out")
    row = table.set_index("name").loc["swap"]
    assert (row["3DMM expression error"], row["3DMM PCC"], row["3DMM pose error (deg)"]) == ("0.123", "0.962", "0.17")
    assert row["AU PCC"] == "0.780 ± 0.050" and row["AU source"] == "blendshapes"
    for name in ("blur", "older"):  # not computed, and a summary without the metric at all
        other = table.set_index("name").loc[name]
        assert [other[c] for c in ("3DMM expression error", "3DMM PCC", "3DMM pose error (deg)")] == ["n/a"] * 3
    assert "3dmm" not in table.columns and row["face_ssim"] == "0.910"  # other metrics keep their own column
    assert "3DMM PCC" in (tmp_path / "out" / "compare.html").read_text()

    swap = EvaluationSummary.read(tmp_path / "swap" / "summary.json")
    text = _metrics(swap)
    for shown in ("0.123", "pose error mean 0.175", "pose error yaw 0.129", "pose error pitch 0.271",
                  "pose error roll 0.124", "pcc mean 0.962", "model 3DDFA_V2 mb05 (MIT), never used in training",
                  "3dmm pcc (10 frames): exp01 0.977, exp02 0.989", "exp10 0.978"):
        assert shown in text, shown
    check_report_html(render_report("t", ("v", "ok"), [("More metrics", text)]))
    blur = _metrics(EvaluationSummary.read(tmp_path / "blur" / "summary.json"))
    assert "not computed: no sampled frame pair" in blur and "pcc (" not in blur


def test_report_names_the_au_source(openface):
    from deid.reports.evaluate_html import _au
    from deid.reports.plots import au_bars, au_timeseries

    summary = _summary("x", 0.72, 0.0, None)
    summary.au = {"computed": False, "source": "blendshapes", "reason": "MediaPipe's face landmarker is missing"}
    assert _au(summary, pd.DataFrame(), {}).startswith(
        "<p>AU source: <b>blendshapes</b>: Action Unit intensities from MediaPipe&#x27;s 52 face blendshapes")
    head = openface.head(30)
    table, au_summary = au.compare_tables(head, head)
    summary.au = {"computed": True, "source": "openface", **au_summary}
    images = {"au_bars.png": au_bars(table), "au_timeseries.png": au_timeseries(head, head)}
    text = _au(summary, table, images)
    assert text.startswith("<p>AU source: <b>openface</b>: OpenFace 2.x FeatureExtraction CSVs")
    assert "30 frames paired" in text
    summary.au["source"] = "somebody-elses"  # a plugin this deid does not have: its name still shows
    assert _au(summary, table, images).startswith("<p>AU source: <b>somebody-elses</b>.</p>")
