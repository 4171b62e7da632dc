"""Session fixtures for the edge tests (a pytest plugin: ``pytest_plugins = ["edge_fixtures"]``).

Kept apart from :mod:`edge_reference` so test modules never import this file themselves
(pytest must be the first to import a plugin module).
"""

from __future__ import annotations

import pytest
from edge_reference import TinyBuild, get_build


@pytest.fixture(scope="session")
def gpt2_build(tmp_path_factory: pytest.TempPathFactory) -> TinyBuild:
    return get_build("gpt2", tmp_path_factory)


@pytest.fixture(scope="session")
def llama_build(tmp_path_factory: pytest.TempPathFactory) -> TinyBuild:
    return get_build("llama", tmp_path_factory)
