import json
from pathlib import Path

import pytest

from pipeline.runner import Manifest, StageSpec, run_stage


def make_spec(tmp_path: Path, calls: list, size: int = 1, fail: bool = False) -> StageSpec:
    source = tmp_path / "input.txt"
    out = tmp_path / "out.txt"

    def run():
        calls.append(size)
        if fail:
            raise RuntimeError("boom")
        out.write_text(source.read_text() * size)
        return {"chars": size}

    return StageSpec(key="stage", inputs={"source": source}, params={"size": size}, outputs=[out], run=run)


def test_skips_only_when_inputs_params_and_outputs_match(tmp_path, caplog):
    caplog.set_level("INFO")
    (tmp_path / "input.txt").write_text("a")
    manifest_path = tmp_path / "manifest.json"
    calls: list = []
    assert run_stage(make_spec(tmp_path, calls), Manifest(manifest_path)).ran
    second = run_stage(make_spec(tmp_path, calls), Manifest(manifest_path))
    assert not second.ran and calls == [1]
    assert "up to date, skipped" in caplog.text

    outcome = run_stage(make_spec(tmp_path, calls, size=2), Manifest(manifest_path))
    assert outcome.ran and outcome.reason == "parameters changed: size"

    (tmp_path / "input.txt").write_text("b")
    assert run_stage(make_spec(tmp_path, calls, size=2), Manifest(manifest_path)).reason == "input source changed"

    (tmp_path / "out.txt").unlink()
    assert run_stage(make_spec(tmp_path, calls, size=2), Manifest(manifest_path)).reason.startswith("output missing")

    assert run_stage(make_spec(tmp_path, calls, size=2), Manifest(manifest_path), force=True).reason == "forced"
    assert calls == [1, 2, 2, 2, 2]


def test_manifest_records_hashes_versions_and_timings(tmp_path):
    (tmp_path / "input.txt").write_text("a")
    run_stage(make_spec(tmp_path, []), Manifest(tmp_path / "manifest.json"))
    record = json.loads((tmp_path / "manifest.json").read_text())["stages"]["stage"]
    assert record["status"] == "done"
    assert len(record["inputs"]["source"]["sha256"]) == 64
    assert record["params"] == {"size": 1}
    assert "python" in record["versions"] and record["seconds"] >= 0
    assert record["summary"] == {"chars": 1}


def test_a_failed_stage_is_recorded_and_re_runs(tmp_path):
    (tmp_path / "input.txt").write_text("a")
    manifest_path = tmp_path / "manifest.json"
    with pytest.raises(RuntimeError):
        run_stage(make_spec(tmp_path, [], fail=True), Manifest(manifest_path))
    record = json.loads(manifest_path.read_text())["stages"]["stage"]
    assert record["status"] == "failed" and record["error"] == "boom"
    assert run_stage(make_spec(tmp_path, []), Manifest(manifest_path)).reason == "last run failed"


def test_unreadable_manifest_means_rerun_not_crash(tmp_path):
    (tmp_path / "input.txt").write_text("a")
    (tmp_path / "manifest.json").write_text("{not json")
    assert run_stage(make_spec(tmp_path, []), Manifest(tmp_path / "manifest.json")).ran


def test_a_shared_stage_runs_once_when_two_pairs_need_it_at_once(tmp_path):
    """Two pairs reach the same shared stage together: one runs it, the other waits and finds it done."""
    import threading
    import time

    (tmp_path / "input.txt").write_text("a")
    shared = tmp_path / "shared"
    calls: list[str] = []

    def spec_for(pair: str) -> StageSpec:
        def run():
            calls.append(pair)
            time.sleep(0.5)
            (shared / "out.txt").write_text("done")
            return {}

        shared.mkdir(exist_ok=True)
        return StageSpec(key=f"extract:{pair}-name", inputs={"source": tmp_path / "input.txt"}, params={},
                         outputs=[shared / "out.txt"], run=run, manifest=shared / "manifest.json", record="extract")

    outcomes = {}

    def pair(name: str) -> None:
        outcomes[name] = run_stage(spec_for(name), Manifest(tmp_path / name / "manifest.json"))

    threads = [threading.Thread(target=pair, args=(name,)) for name in ("p1", "p2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(o.ran for o in outcomes.values()) == [False, True]
    assert set(json.loads((shared / "manifest.json").read_text())["stages"]) == {"extract"}
    assert not (tmp_path / "p1" / "manifest.json").exists()  # the record lives with the shared output


def test_concurrent_records_of_one_manifest_are_all_kept(tmp_path):
    """Stages of one pair finishing at once (Ray) must not overwrite each other's records."""
    import threading

    (tmp_path / "input.txt").write_text("a")
    manifest_path = tmp_path / "manifest.json"

    def stage(i: int) -> None:
        out = tmp_path / f"out{i}.txt"
        spec = StageSpec(key=f"stage{i}", inputs={"source": tmp_path / "input.txt"}, params={}, outputs=[out],
                         run=lambda: out.write_text("x") and {})
        run_stage(spec, Manifest(manifest_path))

    threads = [threading.Thread(target=stage, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = json.loads(manifest_path.read_text())["stages"]
    assert sorted(records) == [f"stage{i}" for i in range(8)] and all(r["status"] == "done" for r in records.values())
