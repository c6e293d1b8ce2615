"""What makes a test a unit test, checked: it starts no process (no script, sandbox slot, pool or server
subprocess) and uses no model, server or local Hub fixture. A test that needs one belongs in tests/integration."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

OUTSIDE_THE_TIER = {"tiny_model", "local_hub", "hub", "recorded_run", "served_engines"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:  # a conftest's collection hook sees the whole session's items: only this folder's
        if not Path(item.path).is_relative_to(here):
            continue
        used = OUTSIDE_THE_TIER & set(getattr(item, "fixturenames", ()))
        if used:
            raise pytest.UsageError(f"{item.nodeid} uses {', '.join(sorted(used))}: it belongs in tests/integration")


@pytest.fixture(autouse=True)
def no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("a unit test started a process: it belongs in tests/integration")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    monkeypatch.setattr(os, "fork", refuse)
