"""Shared pytest setup. Slow end-to-end tests run only with FEDGRPO_SLOW=1 (make test)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("FEDGRPO_SLOW") == "1":
        return
    skip = pytest.mark.skip(
        reason="slow end-to-end test; run with FEDGRPO_SLOW=1 (make test runs them)"
    )
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
