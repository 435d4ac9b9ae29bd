"""Before a dashboard window opens: does Qt's platform plugin find its system libraries?

The PySide6 wheel brings Qt but not every library its X11 plugin (``libqxcb.so``)
links against: on a plain Debian or Ubuntu desktop ``libxcb-icccm4`` and
``libxcb-keysyms1`` are often missing, and Qt then aborts the whole process with a
message that names only ``libxcb-cursor0``. ``missing_libraries()`` asks ``ldd``
what the plugin of the platform Qt will use cannot find, so that the dashboard
can say which system packages to install, and ``stcsnn demo`` can fall back to its
console view instead of dying. Qt-free: it never loads the plugin.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# Set to a plugin file to check that one instead of PySide6's (tests simulate a
# missing library with a plugin they build).
PLUGIN_OVERRIDE = "STCSNN_QT_PLATFORM_PLUGIN"
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


def platform_in_use() -> str:
    """The Qt platform a window will get: QT_QPA_PLATFORM, else xcb with an X display,
    wayland with only a Wayland one, offscreen with none (``dashboard.ensure_display``)."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return os.environ["QT_QPA_PLATFORM"].split(":")[0]
    if os.environ.get("DISPLAY"):
        return "xcb"
    if os.environ.get("WAYLAND_DISPLAY"):
        return "wayland"
    return "offscreen"


def plugin_path(platform: str) -> Path | None:
    """PySide6's plugin file for ``platform`` (or the override), None if there is none."""
    override = os.environ.get(PLUGIN_OVERRIDE)
    if override:
        return Path(override)
    try:
        import PySide6
    except ImportError:
        return None
    path = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / f"libq{platform}.so"
    return path if path.is_file() else None


def missing_libraries(plugin: Path | None = None) -> list[str]:
    """The shared libraries (sonames) the platform plugin links against and the dynamic
    linker cannot find; empty where all are there, or where this cannot be told
    (not Linux, no ``ldd``, no plugin)."""
    if not sys.platform.startswith("linux") or shutil.which("ldd") is None:
        return []
    if plugin is None and platform_in_use() == "offscreen":
        return []  # the offscreen plugin needs nothing beyond the wheel
    plugin = plugin or plugin_path(platform_in_use())
    if plugin is None:
        return []
    try:
        done = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted(set(_NOT_FOUND.findall(done.stdout)))


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package that ships a library, by its naming rule:
    ``libxcb-icccm.so.4`` -> ``libxcb-icccm4``, ``libxkbcommon-x11.so.0`` ->
    ``libxkbcommon-x11-0``."""
    name, _, version = soname.partition(".so.")
    if not version:
        return name
    major = version.split(".")[0]
    return f"{name}-{major}" if name[-1:].isdigit() else f"{name}{major}"


def explain(missing: list[str]) -> str:
    """One line: what is missing and the command that installs it."""
    packages = " ".join(sorted({debian_package(soname) for soname in missing}))
    return (
        f"Qt's {platform_in_use()} platform plugin cannot find {', '.join(missing)}; "
        f"install them (Debian/Ubuntu: sudo apt-get install {packages})"
    )
