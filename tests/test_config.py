from pathlib import Path

import pytest

from pipeline.config import ExtractConfig, PipelineConfig, load_config
from pipeline.errors import ConfigError

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
    ("extract:\n  masks: extended\n", "extract.masks must be a list"),
    ("extract:\n  masks: [extended, neural]\n", "extract.masks[1] must be one of"),
    ("device: gpu\n", "device must be one of auto, cpu, cuda"),
    ("extract:\n  every: 0\n", "extract.every must be in 1..100000"),
    ("extract: 3\n", "extract must be a mapping"),
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
