"""The check before a dashboard window: a platform plugin whose system library is
missing (simulated with a plugin built here) gets a clear line naming the package,
and the demo falls back to its console view."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from streamer.display_check import PLUGIN_OVERRIDE, debian_package, missing_libraries
from tests.pipeline_helpers import ROOT, nmnist_playlist


def test_sonames_map_to_debian_packages():
    assert debian_package("libxcb-icccm.so.4") == "libxcb-icccm4"
    assert debian_package("libxcb-keysyms.so.1") == "libxcb-keysyms1"
    assert debian_package("libxkbcommon-x11.so.0") == "libxkbcommon-x11-0"
    assert debian_package("libxcb-cursor.so.0.0.0") == "libxcb-cursor0"


@pytest.fixture
def broken_plugin(tmp_path):
    """A shared object linked against a library that is then removed."""
    if shutil.which("gcc") is None or shutil.which("ldd") is None:
        pytest.skip("needs gcc and ldd to build a plugin with a missing library")
    library, caller = tmp_path / "gone.c", tmp_path / "plugin.c"
    library.write_text("int gone(void) { return 1; }\n")
    caller.write_text("int gone(void);\nint plugin(void) { return gone(); }\n")
    gone = tmp_path / "libstcsnn-gone.so.1"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,-soname,libstcsnn-gone.so.1", "-o", gone, library],
        check=True,
    )
    plugin = tmp_path / "libqfake.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,--no-as-needed", "-o", plugin, caller, str(gone)],
        check=True,
    )
    gone.unlink()
    return plugin


def test_a_missing_library_of_the_plugin_is_found(broken_plugin):
    assert missing_libraries(broken_plugin) == ["libstcsnn-gone.so.1"]


def _env(plugin) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    return {**env, "DISPLAY": ":99", PLUGIN_OVERRIDE: str(plugin)}


def test_the_dashboard_names_the_package_and_the_demo_falls_back(broken_plugin, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "stcsnn", "dashboard", "--connect", "tcp://127.0.0.1:9"],
        cwd=ROOT, env=_env(broken_plugin), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "apt-get install libstcsnn-gone1" in done.stderr and "Traceback" not in done.stderr
    playlist = nmnist_playlist(tmp_path, digits=range(2))
    done = subprocess.run(
        [sys.executable, "-m", "stcsnn", "demo", "--replay", str(playlist), "--speed", "max",
         "--json"],
        cwd=ROOT, env=_env(broken_plugin), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no dashboard" in done.stderr and "libstcsnn-gone1" in done.stderr
    assert json.loads(done.stdout)["predictions"] > 0
