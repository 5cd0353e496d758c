from pathlib import Path

import pytest

from deid.pipeline.config import ExtractConfig, PipelineConfig, load_config
from deid.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_pipeline_yaml_loads_with_documented_defaults():
    config = load_config(ROOT / "pipeline.yaml")
    defaults = PipelineConfig()
    for section in ("extract", "clean", "train", "convert", "protect", "evaluate"):
        assert getattr(config, section) == getattr(defaults, section), f"pipeline.yaml {section}: differs from the code"
    assert config.extract == ExtractConfig()
    assert config.runs_dir == ROOT / "runs"
    assert config.device == "auto"


def test_every_key_of_the_shipped_yaml_is_commented():
    for line in (ROOT / "pipeline.yaml").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, f"pipeline.yaml key without a comment: {line!r}"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def test_unknown_nested_key_is_named_with_the_file(tmp_path):
    path = write(tmp_path, "extract:\n  sise: 128\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "'extract.sise'" in message and "size" in message
    assert "\n" not in message


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'taget'"):
        load_config(write(tmp_path, "taget: a.mp4\n"))


@pytest.mark.parametrize("text, key", [
    ("extract:\n  size: big\n", "extract.size must be an integer"),
    ("extract:\n  size: true\n", "extract.size must be an integer"),
    ("extract:\n  detector: s3fd\n", "extract.detector must be one of mtcnn, hog"),
    ("train:\n  model: gan\n", "train.model must be one of original, dfaker, villain; got 'gan'"),
    ("extract:\n  masks: extended\n", "extract.masks must be a list"),
    ("extract:\n  masks: [extended, neural]\n", "extract.masks[1] must be one of"),
    ("device: gpu\n", "device must be one of auto, cpu, cuda"),
    ("extract:\n  every: 0\n", "extract.every must be in 1..100000"),
    ("extract: 3\n", "extract must be a mapping"),
    ("evaluate:\n  metrics: [landmark_nme, psnr]\n", "evaluate.metrics must be one of landmark_nme, face_ssim, 3dmm; got 'psnr'"),
    ("evaluate:\n  metrics: face_ssim\n", "evaluate.metrics must be a list"),
])
def test_mistyped_values_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, text))


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    config = load_config(write(tmp_path, "target: clips/a.mp4\ndonor: /abs/b.mp4\nruns_dir: out\n"))
    assert config.target == tmp_path / "clips" / "a.mp4"
    assert config.donor == Path("/abs/b.mp4")
    assert config.runs_dir == tmp_path / "out"


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "extract: [\n"))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_pair_name_must_be_a_plain_folder_name():
    with pytest.raises(ConfigError, match="pair"):
        PipelineConfig(pair="../escape")


@pytest.mark.parametrize("text, line, key, first", [
    ("extract:\n  size: 128\nclean:\n  min_size: 40\nextract:\n  size: 64\n", 5, "extract", 1),
    ("pair: a\nextract:\n  size: 128\n  every: 2\n  size: 64\n", 5, "extract.size", 3),
    ("train:\n  lr: 0.001\n  lr: 0.002\n", 3, "train.lr", 2),
    ("target_references:\n  - {path: a}\n", None, None, None),  # no duplicate: reaches the type check
])
def test_a_key_given_twice_names_the_file_the_line_and_the_key(tmp_path, text, line, key, first):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message
    if key is None:
        assert "duplicate" not in message
        return
    assert message == f"{path}: line {line}: duplicate key '{key}' (first at line {first}); keep one of them"


def test_a_merge_key_may_be_overridden_next_to_it(tmp_path):
    path = write(tmp_path, "x-base: &base {min_score: 0.5, size: 64}\nextract:\n  <<: *base\n  size: 128\n")
    with pytest.raises(ConfigError, match="unknown key 'x-base'"):  # the merge itself is no duplicate
        load_config(path)


@pytest.mark.parametrize("value, shown", [(".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf"), (".NaN", "nan"),
                                          ("1" + "0" * 400, "inf")])
def test_non_finite_numbers_are_refused_with_the_key(tmp_path, value, shown):
    path = write(tmp_path, f"extract:\n  detect_scale: {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: extract.detect_scale must be a finite number, got {shown}"


@pytest.mark.parametrize("section, key", [("clean", "max_yaw"), ("train", "lr"), ("convert", "smooth_beta")])
def test_nan_is_refused_in_every_section(tmp_path, section, key):
    with pytest.raises(ConfigError, match=rf"{section}\.{key} must be a finite number, got nan"):
        load_config(write(tmp_path, f"{section}:\n  {key}: .nan\n"))


def test_a_missing_target_names_the_config_file(tmp_path):
    from deid.pipeline.workflow import plan

    path = write(tmp_path, "pair: x\ndonor: b.mp4\n")
    config = load_config(path)
    with pytest.raises(ConfigError) as err:
        plan(config)
    assert str(err.value) == (f"{path}: 'target' is not set; add target: path/to/video.mp4 (a video, a folder of "
                              "images or a folder of clips)")


def test_the_source_file_is_no_yaml_key_and_stays_out_of_plain_views(tmp_path):
    from deid.pipeline.config import as_plain, config_from_mapping

    config = load_config(write(tmp_path, "pair: x\n"))
    assert config.source == tmp_path / "pipeline.yaml"
    assert "source" not in as_plain(config)
    assert config_from_mapping(as_plain(config), tmp_path) == config  # what the batch executors round-trip
    with pytest.raises(ConfigError, match="unknown key 'source'"):
        load_config(write(tmp_path, "source: elsewhere.yaml\n"))


def test_pipeline_yaml_and_the_cli_reference_name_every_registered_plugin():
    """A plugin family's documented choices are its registry's names: a new built-in plugin must be
    documented where users choose it (pipeline.yaml's comment, the generated command-line reference)."""
    import re

    from deid.models.detectors import DETECTORS
    from deid.models.search import SEARCHES
    from deid.models.swap import FAMILIES
    from deid.reports.au_source import AU_SOURCES
    from deid.reports.metrics import METRICS
    from deid.stages.colour import COLOURS
    from deid.stages.masks import MASKS

    yaml_lines: dict[str, str] = {}
    section = ""
    for line in (ROOT / "pipeline.yaml").read_text().splitlines():
        match = re.match(r"^(\s*)(\w+):\s*(.*)$", line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent, key, rest = match.groups()
        if not indent:
            section = key
        yaml_lines[f"{section}.{key}" if indent else key] = rest
    from deid.pipeline.reference import cli_markdown

    reference = cli_markdown()
    for key, flag, registry in (("extract.detector", "--detector", DETECTORS), ("train.model", "--model", FAMILIES),
                                ("convert.color", "--color", COLOURS), ("convert.mask", "--mask", MASKS),
                                ("evaluate.au", "--au", AU_SOURCES), ("evaluate.metrics", "--metric", METRICS),
                                ("evaluate.detector", None, DETECTORS), ("protect.search", "--search", SEARCHES),
                                ("protect.checker", "--checker", SEARCHES)):
        comment = yaml_lines[key].split("#", 1)[1]
        for name in registry.names():
            assert re.search(rf"\b{re.escape(name)}\b", comment), f"pipeline.yaml {key}: {name} not documented"
        if flag:
            shown = re.findall(rf"{flag} \{{([^}}]*)\}}", reference)  # argparse shows choices as {a,b,c}
            assert shown, f"docs/cli.md: {flag} shows no choices"
            for choices in shown:
                missing = set(registry.names()) - set(choices.split(","))
                assert not missing, f"docs/cli.md: {flag} does not name {', '.join(sorted(missing))}"
