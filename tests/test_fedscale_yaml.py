"""sim.fedscale: FedScale device/availability traces from a scenario file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from fedgrpo.scenarios import mapping
from fedgrpo.scenarios.fields import ScenarioError
from fedgrpo.scenarios.loader import dump_scenario, load_scenario, validate_dict
from fedgrpo.sim.config import clients_from_fedscale
from fedgrpo.sim.engine import run_simulation
from fedgrpo.sim.fedscale import sample_path


def scenario(fedscale: dict[str, Any], count: int = 6, **extra: Any) -> Any:
    return validate_dict(
        {
            "name": "fs",
            "sim": {"reward_source": "timing", "fedscale": fedscale},
            "clients": {"groups": [{"name": "phone", "count": count, "profile": "phone-wifi"}]},
            **extra,
        }
    )


def test_sample_traces_set_each_clients_device_as_the_python_api_does() -> None:
    s = scenario({"capacity": "sample", "behavior": "sample"})
    clients = mapping.sim_config(s).clients
    python = clients_from_fedscale(
        sample_path("capacity"), sample_path("behavior"), profile="phone-wifi", size_class="tiny"
    )
    assert len(python) == 4
    for k, spec in enumerate(clients):  # 6 clients over 4 devices: 5 and 6 reuse 1 and 2
        ref = python[k % 4]
        assert (spec.availability, spec.speed_factor, spec.bandwidth_mbps) == (
            ref.availability,
            ref.speed_factor,
            ref.bandwidth_mbps,
        )
    # device 3: 50 ms/sample against a median of 100 -> twice as fast, 80 Mbit/s, online 40-60 s
    assert clients[2].speed_factor == 2.0 and clients[2].bandwidth_mbps == 80.0
    assert clients[2].availability.intervals == ((40.0, 60.0),)


def test_behaviour_trace_drives_who_answers_in_a_simulation() -> None:
    """In the first 30 s devices 2 (online 100-300 s) and 3 (40-60 s) are offline: every
    request to them counts as offline with the trace, none without it."""
    kw = {"rounds": 6, "round_policy": {"deadline_s": 30.0}, "selection": {"selector": "all"}}

    def offline(fedscale: dict[str, Any]) -> tuple[list[int], float]:
        s = scenario(fedscale, count=4, **kw)
        result = run_simulation(mapping.sim_config(s), 6, seed=0, reward_source="timing")
        return [int(r["offline"]) for r in result.rounds], float(result.rounds[-1]["t_close"])

    with_trace, end = offline({"behavior": "sample"})
    assert end < 40.0  # still before device 3 comes online
    assert with_trace == [2 * 8] * 6  # 2 devices x 8 questions per round, every round
    assert offline({"capacity": "sample"})[0] == [0] * 6


def test_paths_are_absolute_in_the_run_copy_and_json_files_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(sample_path("behavior").with_suffix(".json"), tmp_path / "trace.json")
    monkeypatch.chdir(tmp_path)
    s = scenario({"behavior": "trace.json"})
    assert s.sim.fedscale.behavior == str(tmp_path / "trace.json")
    dumped = dump_scenario(s, tmp_path / "copy.yaml")
    assert load_scenario(dumped).sim.fedscale == s.sim.fedscale
    assert mapping.sim_config(s).clients[1].availability.intervals == (
        (100.0, 300.0),
        (600.0, 900.0),
    )


@pytest.mark.parametrize(
    ("fedscale", "extra", "match"),
    [
        ({"capacity": "missing.pkl"}, {}, r"sim\.fedscale\.capacity: FedScale file 'missing\.pkl'"),
        ({}, {}, r"sim\.fedscale: give capacity and/or behavior"),
        ({"behavior": "BAD"}, {}, r"sim\.fedscale\.behavior: .*needs 'active', 'inactive'"),
        ({"capacity": "BAD"}, {}, r"sim\.fedscale\.capacity: .*numeric 'computation'"),
        ({"behavior": "sample"}, {"mode": "live"}, r"sim\.fedscale: .*mode live"),
        ({"tracefile": "sample"}, {}, r"sim\.fedscale\.tracefile"),
    ],
)
def test_bad_fedscale_settings_name_the_field(
    tmp_path: Path, fedscale: dict[str, Any], extra: dict[str, Any], match: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"1": {"computation": 5}}))
    fedscale = {k: str(bad) if v == "BAD" else v for k, v in fedscale.items()}
    with pytest.raises(ScenarioError, match=match):
        scenario(fedscale, **extra)


def test_a_trace_and_an_offline_override_conflict() -> None:
    with pytest.raises(ScenarioError, match=r"sim\.dropout\.offline: sets availability"):
        validate_dict(
            {"name": "x", "sim": {"fedscale": {"behavior": "sample"}, "dropout": {"offline": 0.1}}}
        )
