"""Parity of the scenario schema with the runtime dataclasses it configures.

For every runtime dataclass in :func:`fedgrpo.scenarios.mapping.runtime_targets` and every
field of the mapped schema sections: (a) the schema default reaches the runtime object
unchanged (or as the documented conversion), (b) a non-default value set in YAML reaches it,
(c) every runtime field is mapped, nested or listed as not user-settable with a reason, and
every schema field feeds a runtime field or is listed in ``SCHEMA_ONLY``. Adding a field on
one side only fails here. Also: every mode asks the same experts for the same YAML, and each
client's requests carry its own group's reward settings.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import typing
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from fedgrpo.edge.protocol import CompetenceRequest, RewardResponse, ScoreRequest
from fedgrpo.experiments.context import ClientRewardTransport, per_client_reward_fn
from fedgrpo.rounds import build_plan, experts_to_ask, plan_dispatch
from fedgrpo.scenarios import mapping
from fedgrpo.scenarios.loader import validate_dict
from fedgrpo.scenarios.overrides import _unwrap, apply_override
from fedgrpo.scenarios.schema import (
    ClientGroup,
    GRPOSection,
    RoundPolicySection,
    Scenario,
    SimSection,
)
from fedgrpo.server.gathering.transport import ClientEndpoint
from fedgrpo.sim.devices import DeviceProfile

Expect = Any  # a value, or a predicate on the runtime value
G0 = mapping.G0

# (target, scenario path) -> (runtime value with the schema default, [(YAML value, runtime value)])
CASES: dict[tuple[str, str], tuple[Expect, list[tuple[Any, Expect]]]] = {
    **{
        ("GRPOConfig", f"server.grpo.{name}"): (default, [(value, value)])
        for name, default, value in [
            ("group_size", 8, 4),
            ("questions_per_round", 8, 3),
            ("temperature", 1.0, 0.7),
            ("top_p", 1.0, 0.9),
            ("max_new_tokens", 40, 24),
            ("lr", 1e-4, 3e-4),
            ("eps_low", 0.2, 0.1),
            ("eps_high", 0.3, 0.4),
            ("beta", 0.0, 0.05),
            ("num_iterations", 1, 2),
            ("loss_type", "grpo", "dapo"),
            ("scale", "group", "batch"),
            ("reward_combine", "mean", "median"),
            ("trim", 0.2, 0.1),
            ("optimizer", "adamw", "sgd"),
            ("adam_beta1", 0.9, 0.8),
            ("adam_beta2", 0.999, 0.99),
            ("sgd_momentum", 0.0, 0.9),
            ("warmup_rounds", 0, 3),
            ("lr_final_fraction", 0.0, 0.1),
            ("negative_advantage_scale", 1.0, 0.5),
            ("shuffle_rewards", False, True),
            ("share_prompt", False, True),
            ("drop_zero_variance", False, True),
        ]
    },
    ("GRPOConfig", "server.grpo.grad_clip"): (1.0, [(0.5, 0.5), (None, mapping.NO_CLIPPING)]),
    # null = the run's number of rounds (60 by default)
    ("GRPOConfig", "server.grpo.lr_decay_rounds"): (60, [(0, 0), (10, 10)]),
    ("RoundPolicy", "round_policy.deadline_s"): (30.0, [(5.0, 5.0)]),
    ("RoundPolicy", "round_policy.quorum"): (2, [(3, 3)]),
    ("RoundPolicy", "round_policy.round_quorum"): (None, [(0.5, 0.5)]),
    # a count of extra experts in YAML, a factor of M (= 2) at runtime
    ("RoundPolicy", "round_policy.over_selection"): (0, [(1, 1), (2, 2)]),  # one unit: a count
    ("RoundPolicy", "round_policy.max_retries"): (0, [(2, 2)]),
    ("SimConfig", "round_policy.async"): ("sync", [(True, "async")]),
    ("SimConfig", "round_policy.max_staleness"): (1, [(3, 3)]),
    ("LateRewardConfig", "round_policy.max_staleness"): (1, [(3, 3)]),
    ("LateRewardConfig", "round_policy.correction"): ("truncated_is", [("none", "none")]),
    ("LateRewardConfig", "round_policy.is_cap"): (2.0, [(5.0, 5.0)]),
    ("LateRewardConfig", "round_policy.min_coverage"): (1.0, [(0.5, 0.5)]),
    ("LateRewardConfig", "round_policy.min_update_groups"): (1, [(8, 8)]),
    ("WorkloadSpec", "tasks.domains"): (
        ("add", "sub", "mul", "mod", "sort"),
        [(["add", "sub"], ("add", "sub"))],
    ),
    ("WorkloadSpec", "server.grpo.questions_per_round"): (8, [(3, 3)]),
    ("WorkloadSpec", "server.grpo.group_size"): (8, [(4, 4)]),
    ("WorkloadSpec", "selection.M"): (2, [(1, 1)]),
    ("WorkloadSpec", "selection.dispatch"): ("broadcast", [("split", "split")]),
    ("WorkloadSpec", "selection.selector"): ("top", [("random", "random"), ("oracle", "top")]),
    ("WorkloadSpec", "server.grpo.max_new_tokens"): (40, [(24, 24)]),
    ("WorkloadSpec", f"{G0}.reward_mode"): (8, [("likelihood", 0), ("agreement", 8)]),
    ("ClientSpec", f"{G0}.profile"): ("laptop", [("rpi4", "rpi4")]),
    ("ClientSpec", f"{G0}.model"): (
        "tiny",
        [("builtin:smollm2-135m-instruct", "135m"), ("/models/llama-1b", "1b")],
    ),
}


def _crashes(p: float) -> Callable[[Any], bool]:
    return lambda profile: isinstance(profile, DeviceProfile) and profile.crash_prob == p


for _where in (f"{G0}.dropout", "sim.dropout"):
    CASES["ClientSpec", f"{_where}.fail"] = ("laptop", [(0.3, _crashes(0.3))])
    CASES["ClientSpec", f"{_where}.offline"] = (
        lambda a: a.kind == "profile",
        [(0.2, lambda a: a.kind == "markov"), (0.0, lambda a: a.kind == "always")],
    )
    CASES["ClientSpec", f"{_where}.slowdown"] = (1.0, [(2.0, 0.5)])

# FedScale sample: device 1 (client 0) is always online, 20,000 kbit/s
CASES["ClientSpec", "sim.fedscale.behavior"] = (
    lambda a: a.kind == "profile",
    [("sample", lambda a: a.kind == "trace" and a.intervals == ((0.0, 1000.0),))],
)
CASES["ClientSpec", "sim.fedscale.capacity"] = (None, [("sample", 20.0)])

# Runtime dataclass defaults that differ from the schema's (the mapping always sets these
# fields, so a scenario never sees the runtime default).
DEFAULT_GAPS: dict[tuple[str, str], str] = {
    ("GRPOConfig", "lr_decay_rounds"): "schema null = the run's rounds; the trainer has no run",
}
TWINS = ("GRPOConfig", "RoundPolicy")  # runtime classes whose defaults must match the schema's

TARGETS = mapping.runtime_targets()
# the schema's defaults, with the default client group spelled out so --set can reach it
BASE: dict[str, Any] = {"name": "parity", "clients": {"groups": [{"name": "expert", "count": 5}]}}


def _matches(expect: Expect, value: Any) -> bool:
    return bool(expect(value)) if callable(expect) else value == expect


def _runtime_value(target: str, path: str, yaml_value: Any = ...) -> Any:
    data = copy.deepcopy(BASE)
    if yaml_value is not ...:
        apply_override(data, path, yaml_value)
    scenario = validate_dict(data, source="parity")
    return TARGETS[target].build(scenario)


def _field_of(target: str, path: str) -> str:
    (name,) = [f for f, paths in TARGETS[target].sources.items() if path in paths]
    return name


def _declared() -> Iterator[tuple[str, str]]:
    for name, t in TARGETS.items():
        for paths in t.sources.values():
            for path in paths:
                yield name, path


def test_every_declared_source_has_a_case_and_vice_versa() -> None:
    assert sorted(CASES) == sorted(_declared())


@pytest.mark.parametrize(("target", "path"), sorted(CASES))
def test_default_and_set_values_reach_the_runtime_object(target: str, path: str) -> None:
    field = _field_of(target, path)
    default, settings = CASES[target, path]
    got = getattr(_runtime_value(target, path), field)
    assert _matches(default, got), f"{path} default -> {target}.{field} = {got!r}"
    for yaml_value, expect in settings:
        got = getattr(_runtime_value(target, path, yaml_value), field)
        assert _matches(expect, got), f"{path}={yaml_value!r} -> {target}.{field} = {got!r}"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_runtime_field_is_mapped_or_declared_fixed(target: str) -> None:
    t = TARGETS[target]
    fields = {f.name for f in dataclasses.fields(t.runtime)}
    declared = [*t.sources, *t.fixed, *t.nested]
    assert len(declared) == len(set(declared)), f"{target}: a field is declared twice"
    assert fields == set(declared), (
        f"{target}: unmapped {sorted(fields - set(declared))}, "
        f"stale {sorted(set(declared) - fields)}"
    )
    assert all(reason.strip() for reason in t.fixed.values())
    for name, nested in t.nested.items():
        scenario = validate_dict(copy.deepcopy(BASE))
        built = getattr(t.build(scenario), name)
        expected = TARGETS[nested].build(scenario)
        assert (built[0] if isinstance(built, tuple) else built) == expected


def _leaf_paths(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name, info in model.model_fields.items():
        key = info.alias or name
        inner = _unwrap(info.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from _leaf_paths(inner, f"{prefix}.{key}")
        else:
            yield f"{prefix}.{key}"


MAPPED_SECTIONS = (
    (GRPOSection, "server.grpo"),
    (RoundPolicySection, "round_policy"),
    (SimSection, "sim"),
    (ClientGroup, G0),
)


@pytest.mark.parametrize(("section", "prefix"), MAPPED_SECTIONS)
def test_every_schema_field_feeds_the_runtime(section: type[BaseModel], prefix: str) -> None:
    fed = {path for _, path in _declared()} | set(mapping.SCHEMA_ONLY)
    missing = [p for p in _leaf_paths(section, prefix) if p not in fed]
    assert not missing, f"schema fields that reach no runtime object: {missing}"


@pytest.mark.parametrize("target", TWINS)
def test_runtime_defaults_equal_the_schema_defaults(target: str) -> None:
    t = TARGETS[target]
    built = t.build(validate_dict(copy.deepcopy(BASE)))
    for f in dataclasses.fields(t.runtime):
        if f.name not in t.sources or (target, f.name) in DEFAULT_GAPS:
            continue
        assert f.default == getattr(built, f.name), (
            f"{target}.{f.name} defaults to {f.default!r} but the scenario's default maps to "
            f"{getattr(built, f.name)!r}; make them equal"
        )


# --------------------------------------------------------------------------- over-selection


def _scenario(**sets: Any) -> Scenario:
    data: dict[str, Any] = {"name": "x", "clients": {"groups": [{"name": "e", "count": 6}]}}
    for path, value in sets.items():
        apply_override(data, path.replace("__", "."), value)
    return validate_dict(data)


@pytest.mark.parametrize("dispatch", ["split", "broadcast"])
@pytest.mark.parametrize(("m", "k"), [(1, 0), (1, 2), (2, 1), (3, 3), (2, 0)])
def test_every_mode_asks_m_plus_over_selection_experts(dispatch: str, m: int, k: int) -> None:
    s = _scenario(selection__M=m, round_policy__over_selection=k, selection__dispatch=dispatch)
    policy = mapping.round_policy(s)
    # timing-only sim: the simulator selects experts itself
    w = mapping.sim_config(s).workload
    assert experts_to_ask(w.experts_per_question, policy.over_selection) == m + k
    # sim with models, emulate, live: the selector ranks M + k, the reserve is the last k
    ranked = list(range(mapping.experts_ranked(s)))
    reserve = mapping.reserve_per_question(s)
    primaries = ranked[: len(ranked) - reserve]
    g = s.server.grpo.group_size
    rng = np.random.default_rng(0)
    plan = build_plan([ranked], [plan_dispatch(g, primaries, mode=dispatch, rng=rng)], [g], policy)
    assert len({a.client_id for a in plan.assignments}) == m + k


def test_selector_all_asks_every_client_once() -> None:
    s = _scenario(selection__selector="all", round_policy__over_selection=2)
    assert mapping.primaries_per_question(s) == 6 and mapping.reserve_per_question(s) == 0
    w = mapping.sim_config(s).workload
    assert experts_to_ask(w.experts_per_question, mapping.round_policy(s).over_selection) == 6


# --------------------------------------------------------------------------- per-group rewards


def _two_groups() -> Scenario:
    return validate_dict(
        {
            "name": "mixed",
            "clients": {
                "groups": [
                    {"name": "a", "count": 2, "reward_mode": "likelihood"},
                    {
                        "name": "b",
                        "count": 1,
                        "reward_mode": "format",
                        "format_weight": 0.3,
                        "partial_credit": 0.5,
                    },
                ]
            },
        }
    )


def test_each_client_gets_its_own_groups_reward_settings() -> None:
    rewards = mapping.client_rewards(_two_groups())
    assert [(r.reward_mode, r.format_weight, r.partial_credit) for r in rewards] == [
        ("likelihood", 0.0, 0.0),
        ("likelihood", 0.0, 0.0),
        ("format", 0.3, 0.5),
    ]
    assert [r.decode_tokens for r in rewards] == [0, 0, 0]


def _echo(name: str) -> Callable[[ScoreRequest], RewardResponse]:
    def call(request: ScoreRequest) -> RewardResponse:
        seen.append((name, request.reward_mode, request.format_weight, request.partial_credit))
        return RewardResponse(request.request_id, name, (0.5,) * len(request))

    return call


seen: list[tuple[str, str, float, float]] = []


def test_sim_model_rewards_score_with_each_clients_mode() -> None:
    seen.clear()
    fn = per_client_reward_fn(_two_groups(), [_echo("a-0"), _echo("a-1"), _echo("b-0")])
    request = ScoreRequest("r", ("q",), ("c",))  # built with the default "auto"
    for k in (0, 2):
        assert fn(k, request) == (0.5,)
    assert seen == [("a-0", "likelihood", 0.0, 0.0), ("b-0", "format", 0.3, 0.5)]


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[int, Any]] = []
        self.traffic = "counter"

    async def score(self, client: ClientEndpoint, request: Any, timeout_s: float) -> Any:
        self.sent.append((client.client_id, request))
        return RewardResponse(request.request_id, client.model_name, (1.0,))

    async def aclose(self) -> None:
        self.sent.append((-1, None))


def test_emulate_and_live_requests_carry_each_clients_mode() -> None:
    inner = _Recorder()
    transport = ClientRewardTransport(inner, mapping.client_rewards(_two_groups()))
    eps = [ClientEndpoint(k, f"http://127.0.0.1:{9000 + k}", f"m{k}") for k in range(3)]

    async def go() -> None:
        await transport.score(eps[1], ScoreRequest("r1", ("q",), ("c",)), 1.0)
        await transport.score(eps[2], ScoreRequest("r2", ("q",), ("c",)), 1.0)
        await transport.score(eps[2], CompetenceRequest("c", ("q",), ("1",)), 1.0)
        await transport.aclose()

    asyncio.run(go())
    (k1, r1), (k2, r2), (_, comp), closed = inner.sent
    assert (k1, r1.reward_mode, r1.format_weight) == (1, "likelihood", 0.0)
    assert (k2, r2.reward_mode, r2.format_weight, r2.partial_credit) == (2, "format", 0.3, 0.5)
    assert isinstance(comp, CompetenceRequest) and closed == (-1, None)
    assert transport.traffic == "counter"


def test_parity_helpers_see_every_section() -> None:
    assert typing.get_type_hints(Scenario)  # the schema resolves its own annotations
    assert {name for name, _ in _declared()} == set(TARGETS)


def test_sim_gatherer_asks_each_client_with_its_own_mode() -> None:
    from fedgrpo.experiments.runtimes.sim import SimGatherer
    from fedgrpo.server.gathering.base import GatherRequest

    s = validate_dict(
        {
            **_two_groups().model_dump(mode="json", by_alias=True),
            "selection": {"M": 1, "selector": "random"},
            "server": {"grpo": {"group_size": 2}},
            "sim": {"dropout": {"fail": 0.0, "offline": 0.0}},
        }
    )
    seen.clear()
    gatherer = SimGatherer(s, [_echo("a-0"), _echo("a-1"), _echo("b-0")], seed=0)
    req = GatherRequest(0, ["q", "r"], [["a", "b"], ["c", "d"]], [[0], [2]], ["add"] * 2, ["1"] * 2)
    result = gatherer.gather(req, np.random.default_rng(0))
    assert result.stats["answered"] == 2
    assert sorted(seen) == [("a-0", "likelihood", 0.0, 0.0), ("b-0", "format", 0.3, 0.5)]
