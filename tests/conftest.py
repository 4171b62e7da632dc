"""Shared pytest setup. Slow end-to-end tests run only with FEDGRPO_SLOW=1 (make test); the
real-model tests (SmolLM2-135M on CPU, minutes each) only with FEDGRPO_REAL_MODEL=1
(make test-all), which keeps make test within its ~10 minutes on 2 cores."""

from __future__ import annotations

import os

import pytest

#: the longest test files (a zoo build, eleven killed runs), scheduled first so that they
#: run alongside everything else instead of after it (make test passes xdist
#: --no-loadscope-reorder, so files are handed to the two workers in this order)
LONGEST_FIRST = ("test_learning.py", "test_resume.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept
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
