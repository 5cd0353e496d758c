"""Each setting is declared once: the CLI's options take their default and choices from the settings'
dataclass fields, and their errors are the dataclass's checks, reworded to name the option."""
from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from deid.core.errors import ConfigError
from deid.pipeline.cli import build_parser, main
from deid.pipeline.cli_settings import add_setting, option_error, settings_from_args
from deid.stages.clean_config import CleanConfig
from deid.stages.convert_config import ConvertConfig
from deid.stages.evaluate_config import EvaluateConfig
from deid.stages.extract_config import ExtractConfig
from deid.stages.protect_config import ProtectConfig

SECTIONS = {"extract": [ExtractConfig], "clean": [CleanConfig], "convert": [ConvertConfig, ProtectConfig],
            "protect": [ProtectConfig], "baseline": [ProtectConfig], "evaluate": [EvaluateConfig]}


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", sorted(SECTIONS))
def test_every_option_of_a_setting_has_the_fields_default_and_choices(command):
    options = {a.dest: a for a in _subparser(command)._actions}
    checked = 0
    for config in SECTIONS[command]:
        hints = typing.get_type_hints(config)
        for field in dataclasses.fields(config):
            action = options.get(field.name)
            if action is None or field.name == "metrics":  # --metric appends to a list: no single default
                continue
            checked += 1
            assert action.default == field.default, (command, field.name, action.default, field.default)
            if typing.get_origin(hints[field.name]) is typing.Literal:
                assert tuple(action.choices) == typing.get_args(hints[field.name]), (command, field.name)
    assert checked >= 3, command


def test_an_option_is_built_back_through_the_dataclass_and_its_error_names_the_option():
    args = _subparser("extract").parse_args(["in.mp4", "-o", "out", "--min-score", "2", "--size", "128"])
    with pytest.raises(ConfigError, match=r"^deid extract: --min-score must be in 0\.\.1, got 2\.0$"):
        settings_from_args(ExtractConfig, args, "extract", "extract")
    args = _subparser("extract").parse_args(["in.mp4", "-o", "out", "--size", "128"])
    assert settings_from_args(ExtractConfig, args, "extract", "extract") == ExtractConfig(size=128)


def test_the_cli_refuses_a_bad_value_in_one_line(tmp_path, capsys):
    code = main(["extract", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "out"), "--min-score", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["deid: error: deid extract: --min-score must be in 0..1, got 2.0"], err


def test_rewording_touches_only_the_sections_keys():
    exc = ConfigError("protect.checker must not share a detector with protect.search (centerface and "
                      "centerface both use centerface): the leak check has to be independent")
    assert str(option_error("protect", exc, "protect")).startswith(
        "deid protect: --checker must not share a detector with --search (centerface")


def test_a_setting_without_a_command_line_form_is_refused():
    with pytest.raises(TypeError, match="no command-line form"):
        add_setting(argparse.ArgumentParser(), EvaluateConfig, "metrics")
