"""The distribution is one package, `deid`: its wheel puts nothing else at the top of site-packages (a package
called `models` or `pipeline` of someone else's stays importable beside deid), ships every subpackage and
the model files, and `import deid` is cheap: the scripting facade loads torch and OpenCV on first use."""
from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: the build backend installed with deid's test extras, no download.
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("deid-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_has_one_top_level_name(wheel):
    tops = {name.split("/")[0] for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"deid"}
    top_level = next(n for n in wheel.namelist() if n.endswith(".dist-info/top_level.txt"))
    assert wheel.read(top_level).decode().split() == ["deid"]


def test_the_wheel_ships_every_subpackage_and_the_model_files(wheel):
    names = set(wheel.namelist())
    packages = sorted(p.parent.relative_to(ROOT).as_posix() for p in ROOT.rglob("__init__.py")
                      if p.parent != ROOT and p.relative_to(ROOT).parts[0] not in ("tests", ".venv", "build")
                      and not any(part.startswith(".") for part in p.relative_to(ROOT).parts))
    missing = [p for p in packages if f"deid/{p}/__init__.py" not in names]
    assert not missing, f"setup.cfg [options] packages lacks {missing}"
    weights = [p.name for p in (ROOT / "models" / "weights").iterdir() if p.suffix in (".onnx", ".tflite",
                                                                                         ".safetensors")]
    assert weights and all(f"deid/models/weights/{w}" in names for w in weights)
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = configparser.ConfigParser()
    scripts.read_string(wheel.read(entry).decode())
    assert scripts["console_scripts"]["deid"] == "deid.pipeline.cli:main"


def test_import_deid_loads_no_heavy_library_and_checks_settings_by_name():
    code = ("import sys, deid\n"
            "heavy = sorted(m for m in ('torch', 'cv2', 'dlib', 'numpy') if m in sys.modules)\n"
            "assert not heavy, heavy\n"
            "from deid.core.errors import ConfigError\n"
            "try:\n"
            "    deid.protect(['nothing.mp4'], 'out', methd='mask')\n"
            "except ConfigError as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("unknown key 'protect.methd' (known keys in protect: "), done.stdout


def test_the_scripting_facade_protects_a_real_clip(data_dir, tmp_path):
    """`deid.protect` is `deid protect`: the same pass, leak check, outputs and exit status (~17 s)."""
    import json

    import deid
    from deid.stages.media import probe

    status = deid.protect([data_dir / "video" / "single_face.mp4"], tmp_path / "out", audio="drop", hold=3)
    (clip,) = json.loads((tmp_path / "out" / "summary.json").read_text())["clips"]
    assert status == 0 and clip["status"] == "published" and clip["leaks"] == 0
    assert clip["faces_found"] == clip["frames"] == 72
    output = probe(tmp_path / "out" / "single_face.mp4")
    assert output.frames == 72 and not output.has_audio
