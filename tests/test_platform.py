"""``qsnap-gui`` on a desktop missing the xcb plugin's system libraries: one line and exit 2,
before Qt is loaded. A fake ``ldd`` stands in for the machine's libraries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qsnap_gui.ui.platform_check import check, platform_order, platform_plugin

PLUGIN_DIR = "/site-packages/PySide6/Qt/plugins/platforms/../../lib"
ALL_FOUND = f"""\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6XcbQpa.so.6 => {PLUGIN_DIR}/libQt6XcbQpa.so.6 (0x00007f06)
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f06)
\tlibxcb-icccm.so.4 => /lib/x86_64-linux-gnu/libxcb-icccm.so.4 (0x00007f06)
\tlibxcb-keysyms.so.1 => /lib/x86_64-linux-gnu/libxcb-keysyms.so.1 (0x00007f06)
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f06)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f06)
"""
# what the fresh Debian 12 desktop of the issue showed (libxcb-cursor0 was installed)
FRESH_DEBIAN = (
    ALL_FOUND.replace(
        "libxcb-icccm.so.4 => /lib/x86_64-linux-gnu/libxcb-icccm.so.4 (0x00007f06)",
        "libxcb-icccm.so.4 => not found",
    ).replace(
        "libxcb-keysyms.so.1 => /lib/x86_64-linux-gnu/libxcb-keysyms.so.1 (0x00007f06)",
        "libxcb-keysyms.so.1 => not found",
    )
    + "\tlibxcb-icccm.so.4 => not found\n"
)
X11 = {"DISPLAY": ":0"}


def fake_ldd(tmp_path: Path, output: str) -> Path:
    """An ``ldd`` that prints ``output`` and notes each plugin it was asked about."""
    (tmp_path / "ldd.out").write_text(output)
    script = tmp_path / "ldd"
    script.write_text(f'#!/bin/sh\necho "$1" >> "{tmp_path}/ldd.calls"\ncat "{tmp_path}/ldd.out"\n')
    script.chmod(0o755)
    return script


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "ldd.calls"
    return path.read_text().splitlines() if path.exists() else []


def never_found(name: str) -> None:
    return None


def test_missing_libraries_are_named_with_the_commands_that_install_them(tmp_path):
    ldd = fake_ldd(tmp_path, FRESH_DEBIAN)
    problem = check(X11, ldd=str(ldd))
    assert problem is not None and "\n" not in problem
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in problem
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in problem
    assert "sudo dnf install xcb-util-wm xcb-util-keysyms" in problem
    assert "cursor" not in problem, "libxcb-cursor0 was installed: it is not blamed"
    assert calls(tmp_path) == [str(platform_plugin("xcb"))]
    assert calls(tmp_path)[0].endswith("Qt/plugins/platforms/libqxcb.so")


def test_nothing_missing_is_no_complaint(tmp_path):
    assert check(X11, ldd=str(fake_ldd(tmp_path, ALL_FOUND)), find_library=never_found) is None


def test_libxcb_cursor_is_checked_even_when_qt_dlopens_it(tmp_path):
    """Builds that dlopen libxcb-cursor do not link it: ldd does not list it at all."""
    without_cursor = "".join(line for line in ALL_FOUND.splitlines(True) if "cursor" not in line)
    ldd = str(fake_ldd(tmp_path, without_cursor))
    problem = check(X11, ldd=ldd, find_library=never_found)
    assert problem is not None and "libxcb-cursor.so.0" in problem
    assert "apt-get install libxcb-cursor0" in problem and "dnf install xcb-util-cursor" in problem
    found = {"xcb-cursor": "libxcb-cursor.so.0"}.get
    assert check(X11, ldd=ldd, find_library=found) is None


def test_an_unknown_library_is_named_even_without_a_package(tmp_path):
    ldd = fake_ldd(tmp_path, ALL_FOUND + "\tlibsomething-new.so.3 => not found\n")
    problem = check(X11, ldd=str(ldd), find_library=never_found)
    assert problem is not None and "libsomething-new.so.3" in problem
    assert "apt-get" not in problem


@pytest.mark.parametrize(
    ("env", "order"),
    [
        ({}, ["xcb"]),
        ({"DISPLAY": ":0"}, ["xcb"]),
        ({"QT_QPA_PLATFORM": "xcb"}, ["xcb"]),
        ({"QT_QPA_PLATFORM": "offscreen"}, ["offscreen"]),
        ({"QT_QPA_PLATFORM": "wayland;xcb"}, ["wayland", "xcb"]),
        ({"QT_QPA_PLATFORM": "xcb:nograb"}, ["xcb"]),
        ({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, ["wayland", "xcb"]),
        ({"XDG_SESSION_TYPE": "wayland"}, ["wayland", "xcb"]),
    ],
)
def test_platform_order_follows_qt(env, order):
    assert platform_order(env) == order


def test_other_platforms_are_not_checked(tmp_path):
    ldd = str(fake_ldd(tmp_path, FRESH_DEBIAN))
    for platform in ("offscreen", "minimal", "vnc"):
        assert check({**X11, "QT_QPA_PLATFORM": platform}, ldd=ldd) is None
    assert calls(tmp_path) == []


def test_a_wayland_session_checks_xcb_only_when_the_wayland_plugin_cannot_load(tmp_path):
    """Qt 6 tries Wayland first there and falls back to xcb."""
    if platform_plugin("wayland") is None:
        pytest.fail("PySide6 ships the wayland platform plugin")
    env = {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}
    assert check(env, ldd=str(fake_ldd(tmp_path, ALL_FOUND)), find_library=never_found) is None
    assert calls(tmp_path) == [str(platform_plugin("wayland"))]
    problem = check(env, ldd=str(fake_ldd(tmp_path, FRESH_DEBIAN)))
    assert problem is not None and "libxcb-icccm.so.4" in problem


def test_qsnap_gui_exits_2_with_one_line_before_loading_qt(tmp_path):
    fake_ldd(tmp_path, FRESH_DEBIAN)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE")
    }
    env.update(DISPLAY=":97", PATH=f"{tmp_path}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.run(
        [sys.executable, "-m", "qsnap_gui.ui.app"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qsnap-gui: the window cannot start")
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in lines[0]
    assert calls(tmp_path), "the check ran ldd on the plugin"


def test_importing_the_entry_point_loads_no_qt():
    code = (
        "import sys, qsnap_gui.ui.app; "
        "print(sorted(m for m in sys.modules if m.startswith(('PySide6', 'qasync'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    assert out.strip() == "[]"
