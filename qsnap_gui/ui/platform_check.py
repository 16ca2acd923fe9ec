"""Before Qt loads its xcb platform plugin: are the system libraries it needs installed?

PySide6's wheels bring Qt but not the X11 helper libraries its xcb plugin links against. When
one is missing, Qt aborts the process (signal 6, "Could not load the Qt platform plugin") and
names the wrong library. This check runs ``ldd`` on the plugin first and names, in one line,
what is missing and the command that installs it. It imports nothing of Qt.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

# soname -> (Debian/Ubuntu package, Fedora package)
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
}
# Qt 6 opens libxcb-cursor with dlopen in some builds, so ldd may not list it
DLOPENED = "libxcb-cursor.so.0"


def platform_plugin(name: str) -> Path | None:
    """PySide6's plugin file for a platform (``xcb`` -> ``libqxcb.so``), found without importing Qt."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "Qt" / "plugins" / "platforms" / f"libq{name}.so"
        if path.exists():
            return path
    return None


def platform_order(env: Mapping[str, str]) -> list[str]:
    """The platform plugins Qt 6 tries, in order, as QGuiApplication picks them on Linux."""
    chosen = env.get("QT_QPA_PLATFORM", "").strip()
    if chosen:
        return [p.split(":", 1)[0].strip() for p in chosen.split(";") if p.strip()]
    order = []
    if env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland":
        order.append("wayland")
    order.append("xcb")  # with DISPLAY, or as the build's default
    return order


def linked(plugin: Path, ldd: str = "ldd") -> dict[str, bool]:
    """The libraries ``ldd`` lists for the plugin, each with whether it was found."""
    try:
        out = subprocess.run(
            [ldd, str(plugin)], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found: dict[str, bool] = {}
    for line in out.splitlines():
        name, arrow, where = line.strip().partition("=>")
        if arrow:
            found[name.strip()] = found.get(name.strip(), True) and where.strip() != "not found"
    return found


def missing_for_xcb(
    plugin: Path,
    ldd: str = "ldd",
    find_library: Callable[[str], str | None] = ctypes.util.find_library,
) -> list[str]:
    """What the xcb plugin lacks: ldd's "not found" lines, plus libxcb-cursor when ldd does not
    list it (dlopened) and the system cannot find it."""
    libraries = linked(plugin, ldd)
    missing = [name for name, found in libraries.items() if not found]
    if DLOPENED not in libraries and find_library("xcb-cursor") is None:
        missing.append(DLOPENED)
    return missing


def message(missing: list[str]) -> str:
    """One line: what is missing and the commands that install it."""
    known = [PACKAGES[name] for name in missing if name in PACKAGES]
    debian = list(dict.fromkeys(d for d, _ in known))
    fedora = list(dict.fromkeys(f for _, f in known))
    line = (
        "qsnap-gui: the window cannot start, Qt's xcb platform plugin needs system libraries "
        f"that are not installed: {', '.join(missing)}"
    )
    if known:
        line += (
            f"; install them with `sudo apt-get install {' '.join(debian)}` (Debian/Ubuntu) "
            f"or `sudo dnf install {' '.join(fedora)}` (Fedora)"
        )
    return line


def check(
    env: Mapping[str, str] | None = None,
    ldd: str = "ldd",
    find_library: Callable[[str], str | None] = ctypes.util.find_library,
) -> str | None:
    """The one-line complaint when Qt would load the xcb plugin and it cannot, else None."""
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux") or shutil.which(ldd) is None:
        return None
    for name in platform_order(env):
        plugin = platform_plugin(name)
        if name == "wayland" and plugin is not None and all(linked(plugin, ldd).values()):
            return None  # Qt will use Wayland
        if name == "xcb":
            if plugin is None:
                return None
            missing = missing_for_xcb(plugin, ldd, find_library)
            return message(missing) if missing else None
        if name != "wayland":
            return None  # offscreen, vnc, eglfs, …: no X11 libraries involved
    return None


def exit_if_missing() -> None:
    """Called by ``qsnap-gui`` before anything imports Qt's GUI modules."""
    problem = check()
    if problem:
        print(problem, file=sys.stderr)
        raise SystemExit(2)
