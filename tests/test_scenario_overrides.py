"""``--set`` overrides: YAML values, list indices, missing sections, bad paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedgrpo.scenarios.loader import load_scenario, validate_dict, with_overrides
from fedgrpo.scenarios.overrides import apply_overrides, parse_value, split_path
from fedgrpo.scenarios.schema import Scenario, ScenarioError

BASE = """\
name: base
rounds: 5
clients:
  groups:
    - {name: a, count: 2}
    - {name: b, profile: rpi4}
"""


@pytest.fixture
def base_file(tmp_path: Path) -> Path:
    p = tmp_path / "base.yaml"
    p.write_text(BASE, encoding="utf-8")
    return p


def test_split_path_and_values() -> None:
    assert split_path("clients.groups[1].count") == ["clients", "groups", "1", "count"]
    assert split_path("clients.groups.1.count") == ["clients", "groups", "1", "count"]
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("[add, sub]") == ["add", "sub"] and parse_value("null") is None
    assert parse_value("sim") == "sim" and parse_value("{a: 1}") == {"a": 1}
    assert parse_value("[unclosed") == "[unclosed"


def test_overrides_are_applied_before_validation(base_file: Path) -> None:
    s = load_scenario(
        base_file,
        [
            "rounds=12",
            "clients.groups.0.count=3",
            "clients.groups[1].profile=rpi5",
            "round_policy.deadline_s=2.5",  # section absent from the file: created
            "sim.dropout.offline=0.2",  # two levels absent
            "tasks.domains=[add, sub, mul, mod, rev]",
            "round_policy.async=true",
        ],
    )
    assert s.rounds == 12 and s.clients.groups[0].count == 3
    assert s.clients.groups[1].profile == "rpi5"
    assert s.round_policy.deadline_s == 2.5 and s.round_policy.async_ is True
    assert s.sim.dropout is not None and s.sim.dropout.offline == 0.2
    assert s.tasks.domains[-1] == "rev"


def test_override_can_fix_an_invalid_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nround_policy: {deadline_s: -1}\n", encoding="utf-8")
    with pytest.raises(ScenarioError):
        load_scenario(p)
    assert load_scenario(p, ["round_policy.deadline_s=1"]).round_policy.deadline_s == 1


def test_override_value_is_validated(base_file: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(base_file, ["clients.groups.1.profile=rpi6"])
    assert "clients.groups[1].profile: 'rpi6' is not a known profile" in str(info.value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("round_polcy.deadline_s=3", "'round_polcy' is not a field of the scenario"),
        ("round_policy.dedline_s=3", "did you mean 'deadline_s'?"),
        ("clients.groups.7.count=3", "index 7 is out of range; clients.groups has 2 items"),
        ("clients.groups.x.count=3", "'x' is not a list index"),
        ("rounds.x=3", "rounds is a single value, it has no field 'x'"),
        ("rounds", "expected KEY=VALUE"),
        ("a..b=1", "empty path segment"),
    ],
)
def test_bad_paths_are_named(base_file: Path, spec: str, expected: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(base_file, [spec])
    msg = str(info.value)
    assert msg.startswith(f"{base_file}: --set ")
    assert expected in msg


def test_all_bad_overrides_reported_together() -> None:
    data: dict[str, Any] = {"name": "x"}
    with pytest.raises(ScenarioError) as info:
        apply_overrides(data, ["nope=1", "rounds=4", "also_nope=2"])
    assert len(info.value.problems) == 2
    assert data["rounds"] == 4


def test_with_overrides_on_a_model() -> None:
    s = Scenario(name="x")
    t = with_overrides(s, ["selection.M=1", "server.grpo.group_size=4"])
    assert (t.selection.M, t.server.grpo.group_size) == (1, 4)
    assert s.selection.M == 2  # original untouched
    with pytest.raises(ScenarioError, match="quorum: 9 is larger"):
        with_overrides(s, ["round_policy.quorum=9"])


@pytest.mark.parametrize(
    ("trl", "ours"),
    [
        ("num_generations", "group_size"),
        ("max_completion_length", "max_new_tokens"),
        ("learning_rate", "lr"),
        ("epsilon", "eps_low"),
        ("epsilon_high", "eps_high"),
        ("scale_rewards", "scale"),
    ],
)
def test_trl_names_get_our_name_in_the_error(trl: str, ours: str) -> None:
    with pytest.raises(ScenarioError, match=f"TRL's '{trl}' is '{ours}' here"):
        validate_dict({"name": "x", "server": {"grpo": {trl: 4}}})
    with pytest.raises(ScenarioError, match=f"TRL's '{trl}' is '{ours}' here"):
        with_overrides(validate_dict({"name": "x"}), [f"server.grpo.{trl}=4"])
