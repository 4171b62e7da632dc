"""Synthetic domain tasks standing in for the paper's MATH subjects (pure Python)."""

from fedgrpo.server.tasks.domains import DOMAINS, Domain, TaskItem, get_domain
from fedgrpo.server.tasks.suite import TaskSuite, build_suite

__all__ = ["DOMAINS", "Domain", "TaskItem", "TaskSuite", "build_suite", "get_domain"]
