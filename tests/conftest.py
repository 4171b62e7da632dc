"""Shared pytest setup. Slow end-to-end tests run only with FEDGRPO_SLOW=1 (make test); the
real-model tests (SmolLM2-135M on CPU, minutes each) only with FEDGRPO_REAL_MODEL=1
(make test-all), which keeps make test within its ~10 minutes on 2 cores."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("FEDGRPO_REAL_MODEL") != "1":
        real = pytest.mark.skip(
            reason="real-model test (SmolLM2 on CPU, minutes); run with FEDGRPO_REAL_MODEL=1 "
            "(make test-all runs them)"
        )
        for item in items:
            if "real_model" in item.keywords:
                item.add_marker(real)
    if os.environ.get("FEDGRPO_SLOW") == "1":
        return
    skip = pytest.mark.skip(
        reason="slow end-to-end test; run with FEDGRPO_SLOW=1 (make test runs them)"
    )
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
