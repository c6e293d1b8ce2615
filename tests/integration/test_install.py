"""The install is portable and minimal: every pip install in the Makefile takes wheels only (nothing compiled for
the build machine's CPU), and `make demo` installs no test-only package."""

from __future__ import annotations

import re
import subprocess

from helpers import ROOT


def requirement_names(path: str) -> set[str]:
    names = set()
    for line in (ROOT / path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[=<>\[ ;]", line)[0].lower().replace("_", "-"))
    return names


def make_dry_run(target: str) -> str:
    """The commands `make` would run for `target` on a fresh clone (-B: as if nothing were installed)."""
    return subprocess.run(["make", "-n", "-B", target, "SELFALIGN_CACHE=/nonexistent"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


def test_every_pip_install_takes_wheels_only():
    for target in ("demo", "test"):
        installs = [line for line in make_dry_run(target).splitlines() if "pip install" in line]
        assert len(installs) >= 4, installs  # the engine's, the project's, its data packages and (test) dev
        for line in installs:
            if "pip install -q --upgrade pip" in line:
                continue
            assert "--only-binary :all:" in line or "torch==" in line, line


def test_demo_installs_no_test_only_package():
    demo, test = make_dry_run("demo"), make_dry_run("test")
    assert "requirements-dev.txt" not in demo and "requirements-dev.txt" in test
    assert "chromium" not in demo  # the browser is for the app's test
    dev_only = requirement_names("requirements-dev.txt")
    assert {"pytest", "ruff", "playwright", "papermill"} <= dev_only
    assert not dev_only & requirement_names("requirements.txt")
    assert "llama-cpp-python" not in requirement_names("requirements.txt") | dev_only
