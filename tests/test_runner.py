import json
from pathlib import Path

import pytest

from deid.pipeline.runner import Manifest, StageSpec, run_stage


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


# --- the code fingerprint ---------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def source_copy(tmp_path) -> Path:
    """The repository's packages (sources only) copied where a test may edit them."""
    import shutil

    copy = tmp_path / "src"
    for package in ("core", "stages", "models", "pipeline", "reports"):
        shutil.copytree(ROOT / package, copy / package, ignore=lambda folder, names: [
            n for n in names if n == "__pycache__" or not (n.endswith(".py") or (Path(folder) / n).is_dir())])
    return copy


def code_stages(tmp_path: Path, root: Path, stages: tuple = ()) -> list[StageSpec]:
    """extract -> clean (needs it) with workflow.py's module lists, and an unrelated concat, from `root`."""
    specs = []
    for key, code, needs in stages or (("extract", ("deid.stages.extract",), ()),
                                       ("clean", ("deid.stages.clean", "deid.stages.extract"), ("extract",)),
                                       ("concat", ("deid.stages.concat",), ())):
        out = tmp_path / f"{key}.txt"
        specs.append(StageSpec(key=key, inputs={"source": tmp_path / "input.txt"}, params={}, outputs=[out],
                               run=lambda out=out: out.write_text("x") and {}, needs=needs, code=code,
                               code_root=root))
    return specs


def reasons(specs: list[StageSpec], manifest: Path) -> dict[str, str | None]:
    from deid.pipeline.runner import code_fingerprint, pending_reason

    code_fingerprint.cache_clear()  # what a new process sees: the fingerprint is cached per process
    return {spec.key: pending_reason(spec, Manifest(manifest)) for spec in specs}


def test_editing_a_stage_module_makes_it_and_its_dependents_stale(tmp_path, source_copy):
    (tmp_path / "input.txt").write_text("a")
    manifest = tmp_path / "manifest.json"
    specs = code_stages(tmp_path, source_copy)
    assert all(run_stage(spec, Manifest(manifest)).ran for spec in specs)
    assert reasons(specs, manifest) == {"extract": None, "clean": None, "concat": None}

    with open(source_copy / "stages" / "extract.py", "a") as handle:
        handle.write("\n# a bug fix\n")
    assert reasons(specs, manifest) == {"extract": "code changed: stages/extract.py",
                                        "clean": "code changed: stages/extract.py", "concat": None}
    outcome = run_stage(specs[0], Manifest(manifest))
    assert outcome.ran and outcome.reason == "code changed: stages/extract.py"
    assert reasons(specs, manifest)["extract"] is None


def test_a_module_a_stage_imports_counts_as_its_code(tmp_path, source_copy):
    """The fingerprint follows in-repo imports at any depth, inside functions and relative ones too."""
    (source_copy / "stages" / "probe.py").write_text("def run():\n    from deid.models import probe_helper\n")
    (source_copy / "models" / "probe_helper.py").write_text("from .probe_deep import SCALE\n")
    (source_copy / "models" / "probe_deep.py").write_text("from deid.core.errors import DeidError\nSCALE = 1\n")
    (tmp_path / "input.txt").write_text("a")
    manifest = tmp_path / "manifest.json"
    specs = code_stages(tmp_path, source_copy, (("probe", ("deid.stages.probe",), ()), ("concat", ("deid.stages.concat",), ())))
    for spec in specs:
        run_stage(spec, Manifest(manifest))
    (source_copy / "models" / "probe_deep.py").write_text("from deid.core.errors import DeidError\nSCALE = 2\n")
    (source_copy / "core" / "errors.py").write_text("# messages only: no stage's output depends on it\n")
    assert reasons(specs, manifest) == {"probe": "code changed: models/probe_deep.py", "concat": None}


def test_a_record_from_before_fingerprints_counts_as_code_changed(tmp_path):
    (tmp_path / "input.txt").write_text("a")
    manifest_path = tmp_path / "manifest.json"
    run_stage(make_spec(tmp_path, []), Manifest(manifest_path))
    document = json.loads(manifest_path.read_text())
    assert document["stages"]["stage"]["code"]["version"] == document["stages"]["stage"]["versions"]["deid"]
    del document["stages"]["stage"]["code"]
    manifest_path.write_text(json.dumps(document))
    assert run_stage(make_spec(tmp_path, []), Manifest(manifest_path)).reason == (
        "code changed: recorded before code fingerprints")


def test_every_planned_stage_fingerprints_its_own_and_its_upstream_modules(tmp_path):
    from deid.pipeline.config import PipelineConfig
    from deid.pipeline.runner import code_fingerprint
    from deid.pipeline.workflow import plan

    _, specs = plan(PipelineConfig(target=tmp_path / "a.mp4", donor=tmp_path / "b.mp4", runs_dir=tmp_path))
    files = {spec.key.split(":")[0]: set(code_fingerprint(spec.code)["files"]) for spec in specs}
    assert set(files) == {"extract", "clean", "train", "convert", "reference", "evaluate"}
    for stage, upstream in (("extract", ()), ("clean", ("extract",)), ("train", ("clean", "extract")),
                            ("convert", ("train", "clean", "extract")), ("reference", ("references", "clean")),
                            ("evaluate", ("convert", "train", "references"))):
        own = "references" if stage == "reference" else stage
        assert {f"stages/{m}.py" for m in (own, *upstream)} <= files[stage], stage
    assert not {"pipeline/runner.py", "core/hashing.py"} & files["extract"]  # bookkeeping, not the stage's code


def _registries_by_stage() -> dict[str, list]:
    """Which stage looks up which plugin family (the stage's own module is what workflow.py fingerprints)."""
    from deid.models.detectors import DETECTORS
    from deid.models.search import SEARCHES
    from deid.models.swap import FAMILIES
    from deid.reports.au_source import AU_SOURCES
    from deid.reports.metrics import METRICS
    from deid.stages.colour import COLOURS
    from deid.stages.masks import MASKS
    from deid.stages.obfuscation import OBFUSCATIONS

    return {"deid.stages.extract": [DETECTORS], "deid.stages.train": [FAMILIES],
            "deid.stages.convert": [FAMILIES, COLOURS, MASKS, OBFUSCATIONS, SEARCHES],
            "deid.stages.evaluate": [DETECTORS, AU_SOURCES, METRICS]}


def test_editing_any_built_in_plugin_makes_the_stage_that_uses_it_stale(tmp_path, source_copy):
    """Every registry's built-in modules, as the registry itself lists them: editing one (in a copy of the
    sources) changes the code fingerprint of each stage that may look it up, so `deid run` re-runs it."""
    from deid.pipeline.runner import code_fingerprint

    for stage, registries in _registries_by_stage().items():
        for registry in registries:
            assert registry.builtin_modules, registry.family
            for module in registry.builtin_modules:
                path = source_copy.joinpath(*module.split(".")[1:]).with_suffix(".py")
                if not path.is_file():
                    path = path.with_suffix("") / "__init__.py"
                code_fingerprint.cache_clear()
                before = code_fingerprint((stage,), source_copy)
                original = path.read_bytes()
                path.write_bytes(original + b"\n# edited\n")
                code_fingerprint.cache_clear()
                after = code_fingerprint((stage,), source_copy)
                path.write_bytes(original)
                assert before["sha256"] != after["sha256"], f"editing {module} leaves {stage} up to date"
    code_fingerprint.cache_clear()


def test_a_built_in_plugin_and_a_plugin_of_your_own_count_as_code(tmp_path, source_copy, monkeypatch):
    """Registries load their built-in plugins by module name, not by import statement, and the user's own
    plugins come from $DEID_PLUGINS: editing either re-runs the stages that may use it."""
    from deid.pipeline.runner import code_fingerprint

    code_fingerprint.cache_clear()
    files = set(code_fingerprint(("deid.stages.convert",))["files"])
    assert {"stages/colour/seamless.py", "stages/masks/components.py", "stages/obfuscation/pixelate.py",
            "models/swap/villain.py"} <= files

    plugin = tmp_path / "plugins" / "my_colour.py"
    plugin.parent.mkdir()
    plugin.write_text("GAIN = 1\n")
    monkeypatch.syspath_prepend(str(plugin.parent))
    monkeypatch.setenv("DEID_PLUGINS", "my_colour")
    (tmp_path / "input.txt").write_text("a")
    manifest = tmp_path / "manifest.json"
    specs = code_stages(tmp_path, source_copy, (("convert", ("deid.stages.convert",), ()),))
    code_fingerprint.cache_clear()
    assert run_stage(specs[0], Manifest(manifest)).ran
    assert reasons(specs, manifest) == {"convert": None}
    plugin.write_text("GAIN = 2\n")
    assert reasons(specs, manifest) == {"convert": "code changed: $DEID_PLUGINS:my_colour"}
    (source_copy / "stages" / "colour" / "hist.py").write_text("# edited\n")
    assert reasons(specs, manifest)["convert"] == "code changed: $DEID_PLUGINS:my_colour, stages/colour/hist.py"
