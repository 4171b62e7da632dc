"""Checks that relate several fields of a validated :class:`~fedgrpo.scenarios.schema.Scenario`.

Each check is a small function ``(scenario) -> [(field path, message), ...]``; :data:`CHECKS`
lists them in reporting order and :func:`cross_field_errors` (run by the loader after pydantic
validation) concatenates their problems, so every problem is reported with its own path.

:func:`environment_errors` checks what the scenario needs from *this machine* (local model
directories that exist, ``token_env`` variables that are set); ``fedgrpo validate`` and
``fedgrpo run`` report them, loading a file alone does not (a resolved run directory stays
loadable elsewhere).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fedgrpo.scenarios.behaviour_section import check_byzantine_guidance
from fedgrpo.scenarios.fedscale_section import check_fedscale
from fedgrpo.scenarios.fields import (
    BUILTIN_PREFIX,
    ZOO_EXPERT,
    ZOO_PREFIX,
    zoo_expert_index,
)
from fedgrpo.scenarios.schema import ClientGroup, Scenario
from fedgrpo.scenarios.task_section import check_task_source, task_data_errors

Problem = tuple[str, str]
Check = Callable[[Scenario], list[Problem]]


def _uses_partition_expert(group: ClientGroup) -> bool:
    return group.model == ZOO_PREFIX + ZOO_EXPERT


def check_quorum(s: Scenario) -> list[Problem]:
    q, g = s.round_policy.quorum, s.server.grpo.group_size
    if q is not None and q > g:
        return [
            (
                "round_policy.quorum",
                f"{q} is larger than server.grpo.group_size ({g}); allowed 1..{g}",
            )
        ]
    return []


def check_experts_per_question(s: Scenario) -> list[Problem]:
    sel, total, g = s.selection, s.clients.total, s.server.grpo.group_size
    if sel.selector == "all":
        return []
    out: list[Problem] = []
    if total < sel.M:
        out.append(
            (
                "selection.M",
                f"{sel.M} experts per question but only {total} clients; allowed 1..{total}",
            )
        )
    if sel.dispatch == "split" and g < sel.M:
        out.append(
            (
                "selection.M",
                f"{sel.M} experts cannot split {g} candidates (server.grpo.group_size); "
                f"use M <= {g} or dispatch: broadcast",
            )
        )
    return out


def check_over_selection(s: Scenario) -> list[Problem]:
    """M + over_selection experts are asked per question; there must be that many clients."""
    k, m, total = s.round_policy.over_selection, s.selection.M, s.clients.total
    if s.selection.selector == "all" or k == 0 or m > total or m + k <= total:
        return []
    return [
        (
            "round_policy.over_selection",
            f"{k} extra experts on top of selection.M={m} asks {m + k} per question but there are "
            f"only {total} clients; allowed 0..{total - m}",
        )
    ]


def check_aux(s: Scenario) -> list[Problem]:
    sel, out = s.selection, []
    if sel.selector == "confidence_graph" and sel.aux_size < sel.L:
        out.append(
            (
                "selection.L",
                f"{sel.L} neighbours but aux_size is {sel.aux_size}; allowed 1..{sel.aux_size}",
            )
        )
    max_aux = s.tasks.aux_pool_per_domain * len(s.tasks.domains)
    if sel.aux_size > max_aux and s.tasks.source.kind == "builtin":  # else: task_data_errors
        out.append(
            (
                "selection.aux_size",
                f"{sel.aux_size} is more than the auxiliary pool "
                f"(tasks.aux_pool_per_domain x domains = {max_aux}); allowed 1..{max_aux}",
            )
        )
    return out


def check_group_names(s: Scenario) -> list[Problem]:
    names = [grp.name for grp in s.clients.groups]
    return [
        (f"clients.groups[{i}].name", f"{name!r} is used by another group; names must be unique")
        for i, name in enumerate(names)
        if name in names[:i]
    ]


def check_client_domains(s: Scenario) -> list[Problem]:
    part, where = s.tasks.partition, "tasks.partition.client_domains"
    if part.client_domains is None:
        return []
    out: list[Problem] = []
    if part.scheme != "by_domain":
        out.append((where, f"is only used with scheme by_domain, not {part.scheme!r}"))
    if len(part.client_domains) != s.num_partitions:
        out.append(
            (
                where,
                f"lists {len(part.client_domains)} clients but there are {s.num_partitions} "
                "partitions (tasks.partition.num_clients or the total client count); make them agree",
            )
        )
    allowed = ", ".join(s.tasks.domains)
    for k, doms in enumerate(part.client_domains):
        if not doms:
            out.append((f"{where}[{k}]", "is empty; give every client 1-2 domains"))
        out += [
            (f"{where}[{k}]", f"{d!r} is not in tasks.domains; allowed: {allowed}")
            for d in doms
            if d not in s.tasks.domains and s.tasks.source.kind == "builtin"
        ]
    return out


def check_partition_count(s: Scenario) -> list[Problem]:
    total = s.clients.total
    uses_expert = any(_uses_partition_expert(grp) for grp in s.clients.groups)
    if not s.models_needed or not uses_expert or s.num_partitions <= total:
        return []
    return [
        (
            "tasks.partition.num_clients",
            f"{s.num_partitions} partitions but only {total} clients use zoo:expert (client k "
            "gets partition k mod num_clients); leave num_clients unset or lower it",
        )
    ]


def check_partition_quality(s: Scenario) -> list[Problem]:
    if not s.models_needed:
        return []
    names = [grp.name for grp in s.clients.groups]
    held: dict[int, str] = {}
    for c in s.client_list():
        if not _uses_partition_expert(c.group):
            continue
        k, quality = c.index % s.num_partitions, c.group.quality
        if held.setdefault(k, quality) != quality:
            return [
                (
                    f"clients.groups[{names.index(c.group.name)}].quality",
                    f"{quality!r} but partition {k} is also held by a {held[k]!r} client; clients "
                    "sharing a partition share its expert, so give them one quality (or more partitions)",
                )
            ]
    return []


def check_expert_index(s: Scenario) -> list[Problem]:
    if not s.models_needed:
        return []
    n = s.num_partitions
    out: list[Problem] = []
    for i, grp in enumerate(s.clients.groups):
        k = zoo_expert_index(grp.model)
        if k is not None and k >= n:
            out.append(
                (
                    f"clients.groups[{i}].model",
                    f"{grp.model!r} names partition {k} but there are only {n}; "
                    f"allowed expert-0..expert-{n - 1}",
                )
            )
    return out


def _group_device_problems(grp: ClientGroup, where: str, live: bool) -> list[Problem]:
    out: list[Problem] = []
    if grp.url is not None and grp.urls is not None:
        out.append(
            (f"{where}.url", "give either url (one device) or urls (one per device), not both")
        )
    if grp.urls is not None and len(grp.urls) != grp.count:
        out.append(
            (
                f"{where}.urls",
                f"lists {len(grp.urls)} URLs but count is {grp.count}; give one URL per device",
            )
        )
    if grp.url is not None and grp.count != 1:
        out.append(
            (
                f"{where}.url",
                f"one url for count {grp.count}; use urls: [...] with one URL per device",
            )
        )
    if grp.token is not None and grp.token_env is not None:
        out.append((f"{where}.token", "give either token or token_env, not both"))
    if live and not grp.device_urls():
        out.append(
            (f"{where}.url", "mode live needs the device URL(s) of every group (url or urls)")
        )
    return out


def check_devices(s: Scenario) -> list[Problem]:
    out: list[Problem] = []
    for i, grp in enumerate(s.clients.groups):
        out += _group_device_problems(grp, f"clients.groups[{i}]", s.mode == "live")
    return out


def check_reward_source(s: Scenario) -> list[Problem]:
    out: list[Problem] = []
    if s.mode == "live" and s.sim.reward_source == "timing":
        out.append(("sim.reward_source", "'timing' only exists in mode sim"))
    if s.mode == "emulate" and s.sim.reward_source == "timing":
        out.append(
            ("sim.reward_source", "'timing' only exists in mode sim; emulate runs real models")
        )
    if s.sim.engine == "vectorised" and (s.mode != "sim" or s.sim.reward_source != "timing"):
        out.append(
            ("sim.engine", "'vectorised' is for timing-only studies: mode sim, sim.reward_source: timing")
        )
    if s.server.baseline != "fedgrpo" and not s.models_needed:
        out.append(
            ("server.baseline", f"{s.server.baseline!r} needs models; set sim.reward_source: model")
        )
    return out


CHECKS: tuple[Check, ...] = (
    check_quorum,
    check_experts_per_question,
    check_over_selection,
    check_aux,
    check_group_names,
    check_client_domains,
    check_partition_count,
    check_partition_quality,
    check_expert_index,
    check_devices,
    check_reward_source,
    check_fedscale,
    check_task_source,
    check_byzantine_guidance,
)


def cross_field_errors(s: Scenario) -> list[Problem]:
    """(field path, message) for every problem that involves several fields."""
    return [problem for check in CHECKS for problem in check(s)]


def is_local_path(source: str) -> bool:
    """A model source that can only mean a local directory: absolute, ``./``, ``../`` or
    ``~`` relative, or more than one ``/`` (a hub id is ``NAME`` or ``ORG/NAME``)."""
    if source.startswith((ZOO_PREFIX, BUILTIN_PREFIX)):
        return False
    return source.startswith(("/", ".", "~")) or "\\" in source or source.count("/") >= 2


def _missing_model(where: str, source: str) -> list[Problem]:
    if not is_local_path(source) or Path(source).expanduser().exists():
        return []
    return [
        (
            where,
            f"{source!r} does not exist on this machine (relative to {os.getcwd()}); give an "
            "existing model directory, a zoo:... model or builtin:NAME",
        )
    ]


def check_local_models(s: Scenario) -> list[Problem]:
    """Local model directories the run loads must exist (clients' only outside live mode,
    where each device serves its own model)."""
    if not s.models_needed:
        return []
    out = _missing_model("server.model", s.server.model)
    if s.mode != "live":
        for i, grp in enumerate(s.clients.groups):
            out += _missing_model(f"clients.groups[{i}].model", grp.model)
    return out


def check_token_env(s: Scenario) -> list[Problem]:
    """Every ``token_env`` a live run reads must be set (the devices would answer 401)."""
    if s.mode != "live":
        return []
    return [
        (
            f"clients.groups[{i}].token_env",
            f"environment variable {grp.token_env} is not set; export {grp.token_env}=<token> "
            "before running, or drop token_env if the devices need no token",
        )
        for i, grp in enumerate(s.clients.groups)
        if grp.token_env is not None and not os.environ.get(grp.token_env)
    ]


def environment_errors(s: Scenario) -> list[Problem]:
    """(field path, message) for what this machine lacks to run ``s``."""
    return check_local_models(s) + check_token_env(s) + task_data_errors(s) + check_device(s)


def check_device(s: Scenario) -> list[Problem]:
    """``server.device: cuda[:N]`` on a machine whose torch sees no such GPU."""
    if not s.models_needed or not s.server.device.startswith("cuda"):
        return []
    from fedgrpo.errors import ConfigError
    from fedgrpo.server.device import resolve_device

    try:
        resolve_device(s.server.device)
    except ConfigError as exc:
        return [("server.device", str(exc).removeprefix("server.device: "))]
    return []
