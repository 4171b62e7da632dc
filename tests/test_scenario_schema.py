"""Scenario schema, loader and the shipped library: real files, real error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedgrpo.errors import FedGRPOError
from fedgrpo.scenarios.loader import (
    RESOLVED_NAME,
    dump_scenario,
    load_run_scenario,
    load_scenario,
    new_run_dir,
    validate_dict,
    validate_files,
)
from fedgrpo.scenarios.schema import Scenario, ScenarioError, known_profiles
from fedgrpo.sim.devices import PROFILES

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"
SHIPPED = sorted(LIBRARY.glob("*.yaml"))
EXPECTED = {
    "quickstart",
    "population",
    "stragglers",
    "dropout-sweep",
    "rpi-fleet",
    "noniid-dirichlet",
    "async-staleness",
    "smollm2",
    "emulate-local",
    "live-template",
    "dataset-gsm8k",
    "dataset-math",
}


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def problems(path: Path, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, overrides)
    return info.value.problems


# ------------------------------------------------------------------ library


def test_library_is_complete() -> None:
    assert {p.stem for p in SHIPPED} == EXPECTED


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_scenario_validates_and_is_documented(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    text = path.read_text(encoding="utf-8")
    header = [line for line in text.splitlines()[:6] if line.startswith("#")]
    assert len(header) >= 3, f"{path.name} needs a header comment"
    assert "fedgrpo " in text, f"{path.name}'s header should say how to run it"


def test_validate_files_reports_all_library_ok() -> None:
    assert validate_files(SHIPPED) == {str(p): [] for p in SHIPPED}


def test_library_properties() -> None:
    lib = {p.stem: load_scenario(p) for p in SHIPPED}
    q = lib["quickstart"]
    assert q.mode == "sim" and q.sim.reward_source == "model"
    assert q.clients.total == 5 and q.server.grpo.group_size == 8
    assert q.server.grpo.questions_per_round == 8 and 50 <= q.rounds <= 150
    assert [c.model for c in q.client_list()] == [f"zoo:expert-{k}" for k in range(5)]
    assert "rpi-zero2" in {g.profile for g in lib["stragglers"].clients.groups}
    assert lib["rpi-fleet"].clients.total >= 1000 and not lib["rpi-fleet"].models_needed
    assert not lib["dropout-sweep"].models_needed
    assert lib["noniid-dirichlet"].tasks.partition.scheme == "dirichlet"
    assert lib["async-staleness"].round_policy.async_
    assert lib["smollm2"].server.model == "builtin:smollm2-135m-instruct"
    smol = lib["smollm2"]  # the real server model learns from the zoo experts (int8 ONNX)
    assert smol.server.prompt.style == "chat" and smol.clients.groups[0].export == "int8"
    assert [c.model for c in smol.client_list()] == [f"zoo:expert-{k}" for k in range(5)]
    assert lib["emulate-local"].mode == "emulate" and lib["emulate-local"].clients.total == 3
    live = lib["live-template"]
    assert live.mode == "live" and all(c.url for c in live.client_list())
    assert all(g.token_env for g in live.clients.groups)


def test_defaults_are_the_quickstart() -> None:
    q = load_scenario(LIBRARY / "quickstart.yaml")
    d = Scenario(name="quickstart")
    skip = {"description"}
    assert {k: v for k, v in q.model_dump().items() if k not in skip} == {
        k: v for k, v in d.model_dump().items() if k not in skip
    }


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    assert load_scenario(write(tmp_path, "rounds: 3\n", "my-exp.yaml")).name == "my-exp"


def test_profiles_are_the_simulators_registry() -> None:
    assert known_profiles() == tuple(sorted(PROFILES))
    assert "rpi4" in known_profiles() and "laptop" in known_profiles()


# ------------------------------------------------------------------ errors


def test_error_is_fedgrpo_error_with_one_line_per_problem(tmp_path: Path) -> None:
    p = write(tmp_path, "name: x\nrounds: 0\nmode: batch\n")
    with pytest.raises(FedGRPOError) as info:
        load_scenario(p)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{p}: ") for line in lines)


def test_unknown_profile_names_file_path_value_and_known(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "name: x\nclients:\n  groups:\n"
        "    - {name: a, count: 2}\n    - {name: b}\n    - {name: c, profile: rpi6}\n",
    )
    (line,) = problems(p)
    assert line.startswith(
        f"{p}: clients.groups[2].profile: 'rpi6' is not a known profile; known: "
    )
    assert "rpi4" in line and "rpi5" in line


def test_unknown_keys_with_did_you_mean(tmp_path: Path) -> None:
    p = write(tmp_path, "name: x\nround_policy:\n  deadline: 5\nselction: {}\n")
    lines = problems(p)
    assert any(
        "round_policy.deadline: unknown key" in line and "did you mean 'deadline_s'?" in line
        for line in lines
    )
    assert any(
        "selction: unknown key" in line and "did you mean 'selection'?" in line for line in lines
    )


def test_negative_deadline_and_wrong_types(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "name: x\nrounds: many\nround_policy: {deadline_s: -5, async: perhaps}\n"
        "server: {grpo: {lr: fast}}\n",
    )
    text = "\n".join(problems(p))
    assert "round_policy.deadline_s: -5 is out of range; input should be greater than 0" in text
    assert "rounds: 'many' has the wrong type; input should be a valid integer" in text
    assert "round_policy.async: 'perhaps' has the wrong type" in text
    assert "server.grpo.lr: 'fast' has the wrong type; input should be a valid number" in text


def test_enumerations_list_what_is_allowed(tmp_path: Path) -> None:
    p = write(tmp_path, "name: x\nmode: cloud\nselection: {dispatch: scatter}\n")
    text = "\n".join(problems(p))
    assert "mode: 'cloud' is not allowed; allowed: sim, emulate, live" in text
    assert "selection.dispatch: 'scatter' is not allowed; allowed: split, broadcast" in text


def test_unknown_domain_and_model(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "name: x\ntasks: {domains: [add, div]}\nserver: {model: 'builtin:gpt9'}\n"
        "clients: {groups: [{name: a, model: 'zoo:teacher'}]}\n",
    )
    text = "\n".join(problems(p))
    assert (
        "tasks.domains: 'div' is not a known domain; known: add, sub, mul, mod, rev, sort" in text
    )
    assert (
        "server.model: 'builtin:gpt9' is not a built-in model; known: builtin:smollm2-135m-instruct"
        in text
    )
    assert "clients.groups[0].model: 'zoo:teacher' is not a zoo model" in text


def test_missing_file_empty_file_and_yaml_syntax(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: file not found"]
    assert "file is empty" in problems(write(tmp_path, "", "e.yaml"))[0]
    assert "expected a mapping" in problems(write(tmp_path, "- a\n- b\n", "l.yaml"))[0]
    bad = write(tmp_path, "name: x\nrounds: [1, 2\nseed: 3\n", "syn.yaml")
    (line,) = problems(bad)
    assert line.startswith(f"{bad}: YAML syntax error at line 3, column ")


def test_missing_required_group_name(tmp_path: Path) -> None:
    p = write(tmp_path, "name: x\nclients: {groups: [{count: 2}]}\n")
    assert problems(p) == [f"{p}: clients.groups[0].name: is required but missing"]


def test_cross_field_checks(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "name: x\nmode: live\n"
        "round_policy: {quorum: 9}\n"
        "selection: {M: 4}\n"
        "clients:\n  groups:\n    - {name: a, count: 2, url: 'http://h:1'}\n    - {name: a}\n",
    )
    text = "\n".join(problems(p))
    assert "round_policy.quorum: 9 is larger than server.grpo.group_size (8); allowed 1..8" in text
    assert "selection.M: 4 experts per question but only 3 clients; allowed 1..3" in text
    assert "clients.groups[1].name: 'a' is used by another group" in text
    assert "clients.groups[0].url: one url for count 2" in text
    assert "clients.groups[1].url: mode live needs the device URL(s)" in text


def test_zoo_expert_needs_at_least_one_client_per_partition(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "name: x\ntasks: {partition: {num_clients: 7}}\nclients: {groups: [{name: a, count: 5}]}\n",
    )
    (line,) = problems(p)
    assert "tasks.partition.num_clients: 7 partitions but only 5 clients use zoo:expert" in line
    # fewer partitions than clients: devices share partitions (client k holds k mod P)
    shared = write(
        tmp_path,
        "name: x\ntasks: {partition: {num_clients: 2}}\nclients: {groups: [{name: a, count: 5}]}\n",
        "shared.yaml",
    )
    models = [c.model for c in load_scenario(shared).client_list()]
    assert models == [
        "zoo:expert-0",
        "zoo:expert-1",
        "zoo:expert-0",
        "zoo:expert-1",
        "zoo:expert-0",
    ]
    # timing-only simulations load no model, so no partition check
    ok = write(
        tmp_path,
        "name: x\nsim: {reward_source: timing}\ntasks: {partition: {num_clients: 3}}\n"
        "clients: {groups: [{name: a, count: 500, profile: rpi4}]}\nselection: {selector: random}\n",
        "t.yaml",
    )
    assert load_scenario(ok).clients.total == 500


def test_client_domains_checked(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "name: x\ntasks: {domains: [add, sub], partition: {client_domains: [[add], [mul]]}}\n"
        "clients: {groups: [{name: a, count: 3}]}\n",
    )
    text = "\n".join(problems(p))
    assert "tasks.partition.client_domains: lists 2 clients but there are 3 partitions" in text
    assert (
        "tasks.partition.client_domains[1]: 'mul' is not in tasks.domains; allowed: add, sub"
        in text
    )


# ------------------------------------------------------------------ dump / run dirs


def test_dump_round_trips(tmp_path: Path) -> None:
    s = load_scenario(LIBRARY / "async-staleness.yaml", ["rounds=3"])
    out = dump_scenario(s, tmp_path / "run" / RESOLVED_NAME)
    again = load_scenario(out)
    assert again == s
    data = yaml.safe_load(out.read_text())
    assert data["round_policy"]["async"] is True  # alias, not async_
    assert out.read_text().startswith("# resolved scenario")


def test_new_run_dir_layout(tmp_path: Path) -> None:
    s = load_scenario(LIBRARY / "quickstart.yaml")
    a = new_run_dir(s, tmp_path)
    b = new_run_dir(s, tmp_path)
    assert a != b and a.parent == b.parent == tmp_path / "quickstart"
    assert load_run_scenario(a) == s
    with pytest.raises(ScenarioError, match="not a run directory"):
        load_run_scenario(tmp_path)


def test_over_selection_beyond_the_clients_is_rejected() -> None:
    data = {"name": "x", "clients": {"groups": [{"name": "e", "count": 3}]}}
    data["round_policy"] = {"over_selection": 2}
    with pytest.raises(ScenarioError) as exc:
        validate_dict(data)
    (line,) = exc.value.problems
    assert "round_policy.over_selection" in line and "asks 4 per question" in line
    assert "allowed 0..1" in line
    data["round_policy"] = {"over_selection": 1}
    assert validate_dict(data).round_policy.over_selection == 1


def test_schema_section_names_differ_from_runtime_classes() -> None:
    """One name per class: no schema class shares a name with a runtime dataclass."""
    import fedgrpo.scenarios.schema as schema
    from fedgrpo.scenarios.mapping import runtime_targets

    runtime_names = {t.runtime.__name__ for t in runtime_targets().values()}
    assert runtime_names == set(runtime_targets())
    assert not runtime_names & set(vars(schema)), runtime_names & set(vars(schema))


def test_expert_quality_goes_to_the_zoo_per_partition(tmp_path: Path) -> None:
    from fedgrpo.experiments.context import client_domains, zoo_spec

    pop = load_scenario(LIBRARY / "population.yaml")
    qualities = pop.partition_qualities()
    assert qualities == ("strong",) * 5 + ("weak",) * 10 + ("wrong",) * 5
    spec = zoo_spec(pop)
    assert spec.expert_quality == qualities
    held = client_domains(spec)
    assert held[0] == {"add"} and held[5] == {"add"} and held[15] == set()  # wrong knows none
    assert load_scenario(LIBRARY / "quickstart.yaml").partition_qualities() == ()


def test_clients_sharing_a_partition_must_share_a_quality(tmp_path: Path) -> None:
    text = (
        "tasks: {partition: {scheme: by_domain, num_clients: 5}}\n"
        "clients:\n  groups:\n"
        "    - {name: a, count: 5, model: zoo:expert, quality: weak}\n"
        "    - {name: b, count: 5, model: zoo:expert, quality: wrong}\n"
    )
    found = problems(write(tmp_path, text))
    assert any("clients.groups[1].quality" in p and "share its expert" in p for p in found), found
