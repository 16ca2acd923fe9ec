"""A wheel carries the icons and the style sheet: built, installed into a fresh venv, loaded.

The venv sees the system's site-packages (PySide6 and the rest need no download) and gets the
wheel with ``--no-deps``; the check runs outside the checkout, so nothing can come from it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ICONS = sorted(p.stem for p in (ROOT / "resources" / "icons").glob("*.svg"))

CHECK = """
import json, sys
from PySide6.QtWidgets import QApplication
app = QApplication(sys.argv[:1])
import qsnap_gui
from qsnap_gui.ui.icons import icon, resource_root, style_sheet
names = json.loads(sys.argv[1])
print(json.dumps({
    "package": qsnap_gui.__file__,
    "root": str(resource_root() / "qsnap.qss"),
    "missing": [n for n in names if icon(n).isNull()],
    "style_sheet": style_sheet(),
}))
"""


def run(*args: str, cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def build_wheel(tmp_path: Path) -> Path:
    """From a copy of the sources, so the checkout gets no build/ or egg-info of ours."""
    source = tmp_path / "source"
    source.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("qsnap_gui", "resources"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    dist = tmp_path / "dist"
    run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--quiet", "--wheel-dir", str(dist), str(source), cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = dist.glob("qsnap_gui-*.whl")
    return wheel


def test_the_wheel_carries_every_package_and_the_resources(tmp_path):
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "qsnap_gui").rglob("__init__.py")}
    assert {p for p in packages if f"{p}/__init__.py" not in names} == set()
    assert "qsnap_gui/resources/qsnap.qss" in names
    assert {f"qsnap_gui/resources/icons/{n}.svg" for n in ICONS} <= names

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--system-site-packages", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    run(
        str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
        str(wheel), cwd=tmp_path,
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["QT_QPA_PLATFORM"] = "offscreen"
    shown = json.loads(
        run(str(python), "-c", CHECK, json.dumps(ICONS), cwd=tmp_path, env=env).splitlines()[-1]
    )
    assert Path(shown["package"]).is_relative_to(venv), shown["package"]
    assert Path(shown["root"]).is_relative_to(venv), shown["root"]
    assert shown["missing"] == []
    assert shown["style_sheet"] == (ROOT / "resources" / "qsnap.qss").read_text(encoding="utf-8")
