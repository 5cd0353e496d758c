"""The type gate: mypy --strict on the core layer (errors, atomic writes, locks, registry, settings, hashing),
which every other layer builds on. The rest of deid is checked by ruff (tests/test_lint.py) only."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mypy(package_root: Path, *targets: str) -> subprocess.CompletedProcess:
    # The checkout may have any folder name: mypy sees it as `deid` through a link, as the wheel installs it.
    home = package_root.parent / "mypy-home"
    home.mkdir(exist_ok=True)
    link = home / "deid"
    if not link.exists():
        link.symlink_to(package_root, target_is_directory=True)
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent",
                           "--cache-dir", str(home / ".cache"), *targets], cwd=home, capture_output=True, text=True,
                          timeout=600)


def test_core_passes_mypy_strict(tmp_path):
    if shutil.which("mypy") is None and subprocess.run([sys.executable, "-m", "mypy", "--version"],
                                                       capture_output=True).returncode != 0:
        pytest.fail("mypy is missing: pip install -e '.[test]' (install.sh does this)")
    checkout = tmp_path / "checkout"
    checkout.symlink_to(ROOT, target_is_directory=True)
    done = _mypy(checkout, "-p", "deid.core")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_gate_fails_on_a_type_error(tmp_path):
    # The gate can fail: a copy of core with one wrong annotation.
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "core", copy / "core", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "__init__.py").write_text("")
    bad = copy / "core" / "hashing.py"
    bad.write_text(bad.read_text() + "\n\ndef broken() -> int:\n    return sha256_file(Path('x'))\n")
    done = _mypy(copy, "-p", "deid.core")
    assert done.returncode == 1 and "hashing.py" in done.stdout and "return-value" in done.stdout, done.stdout
