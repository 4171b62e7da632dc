"""Selectors, the competence matrix and candidate dispatch."""

from __future__ import annotations

import numpy as np
import pytest

from fedgrpo.errors import ConfigError
from fedgrpo.rounds import plan_dispatch
from fedgrpo.selection import (
    AllSelector,
    CompetenceMatrix,
    CompetenceSelector,
    ConfidenceGraphSelector,
    OracleSelector,
    RandomSelector,
    make_selector,
)

# two domains on orthogonal axes; client 0 good at "add", client 1 at "mul", client 2 poor
AUX = np.array([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)
COMP = np.array(
    [
        [1, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 1, 1],
        [0, 0, 1, 0, 0, 1],
    ],
    dtype=float,
)


def test_confidence_graph_picks_domain_experts() -> None:
    sel = ConfidenceGraphSelector(AUX, COMP, L=3, M=1)
    q = np.array([[0.9, 0.1], [0.1, 0.9]])
    assert sel.select(q, None, np.random.default_rng(0)) == [[0], [1]]
    assert sel.select(q, None, np.random.default_rng(0), available={1, 2}) == [[2], [1]]


def test_confidence_graph_reads_live_competence_matrix() -> None:
    cm = CompetenceMatrix(6, ["a", "b"])
    sel = make_selector("confidence_graph", aux_embeddings=AUX, competence=cm, L=3, M=1)
    cm.update("a", [0, 1, 2], [0, 0, 0], round=0)
    q = np.array([[1.0, 0.0]])
    assert sel.select(q, None, np.random.default_rng(0)) == [[1]]  # unknown "b" → prior 0.5
    cm.add_client("c")
    assert len(sel.select(q, None, np.random.default_rng(0), available={0, 2})[0]) == 1


def test_random_selector_seeded_and_respects_available() -> None:
    sel = RandomSelector(10, M=3)
    a = sel.select(None, ["x"] * 50, np.random.default_rng(3), available={1, 4, 5, 8})
    b = sel.select(None, ["x"] * 50, np.random.default_rng(3), available={1, 4, 5, 8})
    assert a == b
    assert all(len(set(r)) == 3 and set(r) <= {1, 4, 5, 8} for r in a)
    assert sel.select(None, ["x"], np.random.default_rng(0), available={2}) == [[2]]


def test_oracle_selector() -> None:
    sel = OracleSelector([{"add"}, {"mul", "add"}, {"mul"}, {"sub"}], M=2)
    out = sel.select(None, ["add", "mul", "sub", "div"], np.random.default_rng(0))
    assert sorted(out[0]) == [0, 1]
    assert sorted(out[1]) == [1, 2]
    assert out[2][0] == 3 and len(out[2]) == 2  # one expert, random fill
    assert len(set(out[3])) == 2
    fills = {tuple(sel.select(None, ["sub"], np.random.default_rng(i))[0]) for i in range(30)}
    assert {f[1] for f in fills} == {0, 1, 2}  # fill is random, not lowest index
    one = OracleSelector([{"add"}, {"add"}, {"add"}], M=1)
    picks = {one.select(None, ["add"], np.random.default_rng(i))[0][0] for i in range(30)}
    assert picks == {0, 1, 2}
    with pytest.raises(ConfigError, match="question_domains"):
        sel.select(np.zeros((1, 2)), None, np.random.default_rng(0))


def test_all_selector_and_factory_errors() -> None:
    assert AllSelector(3).select(None, ["a", "b"], np.random.default_rng(0), {0, 2}) == [
        [0, 2],
        [0, 2],
    ]
    with pytest.raises(ConfigError, match="allowed"):
        make_selector("best", num_clients=3)
    with pytest.raises(ConfigError, match="aux_embeddings"):
        make_selector("confidence_graph")
    with pytest.raises(ConfigError, match=r"allowed 0\.\.2"):
        AllSelector(3).select(None, ["a"], np.random.default_rng(0), {5})
    assert isinstance(make_selector("random", num_clients=4), RandomSelector)
    assert isinstance(make_selector("oracle", client_domains=[{"a"}]), OracleSelector)


def test_competence_matrix_lifecycle_and_json() -> None:
    cm = CompetenceMatrix(4, ["a", "b"])
    assert cm.needs_refresh(0) == ["a", "b"]
    cm.update("a", [0, 2], [1.0, 0.0], round=1)
    cm.update("b", [1], [1.0], round=3)
    assert cm.needs_refresh(4) == []
    assert cm.needs_refresh(4, every_n=3) == ["a"]
    row = cm.add_client("c")
    assert row == 2 and np.isnan(cm.values[2]).all() and cm.needs_refresh(4) == ["c"]
    back = CompetenceMatrix.from_json(cm.to_json())
    np.testing.assert_array_equal(back.values, cm.values)  # NaN-aware
    assert back.client_ids == cm.client_ids and back.measured_at == cm.measured_at
    cm.remove_client("a")
    assert cm.client_ids == ["b", "c"] and cm.values[0, 1] == 1.0
    cm.reset_client("b")
    assert np.isnan(cm.values[0]).all() and cm.needs_refresh(5) == ["b", "c"]
    with pytest.raises(ConfigError, match="unknown client"):
        cm.update("zz", [0], [1.0])
    with pytest.raises(ConfigError, match="already"):
        cm.add_client("b")
    with pytest.raises(ConfigError, match="range"):
        cm.update("b", [4], [1.0])
    empty = CompetenceMatrix.from_json(CompetenceMatrix(3).to_json())
    assert empty.values.shape == (0, 3)


@pytest.mark.parametrize("g,m", [(8, 2), (8, 3), (7, 4), (2, 3), (1, 1)])
def test_split_covers_every_candidate_once(g: int, m: int) -> None:
    experts = [10 + i for i in range(m)]
    plan = plan_dispatch(g, experts, "split", np.random.default_rng(g * 10 + m))
    flat = sorted(c for cs in plan.values() for c in cs)
    assert flat == list(range(g))
    sizes = [len(cs) for cs in plan.values()]
    assert max(sizes) - min(sizes) <= 1 and set(plan) <= set(experts)
    assert len(plan) == min(g, m)


def test_split_seeded_and_broadcast() -> None:
    a = plan_dispatch(8, [3, 5], "split", np.random.default_rng(1))
    assert a == plan_dispatch(8, [3, 5], "split", np.random.default_rng(1))
    plans = {str(plan_dispatch(7, [3, 5], "split", np.random.default_rng(i))) for i in range(10)}
    assert len(plans) > 1
    assert plan_dispatch(4, [3, 5], "broadcast") == {3: [0, 1, 2, 3], 5: [0, 1, 2, 3]}
    assert plan_dispatch(4, [], "split", np.random.default_rng(0)) == {}
    with pytest.raises(ConfigError, match="allowed"):
        plan_dispatch(4, [1], "scatter")
    with pytest.raises(ConfigError, match="duplicates"):
        plan_dispatch(4, [1, 1], "broadcast")
    with pytest.raises(ConfigError, match="rng"):
        plan_dispatch(4, [1, 2], "split")


@pytest.mark.parametrize(("g", "m"), [(8, 3), (5, 5), (3, 4), (7, 2), (1, 3)])
def test_server_and_simulator_deal_candidates_by_one_rule(g: int, m: int) -> None:
    experts = [40 + k for k in range(m)]
    server = plan_dispatch(g, experts, "split", np.random.default_rng(9))
    sim = plan_dispatch(g, experts, "split", order=np.random.default_rng(9).permutation(g).tolist())
    assert server == sim
    sizes = [len(server.get(e, [])) for e in experts]
    assert sizes == sorted(sizes, reverse=True)  # the larger shares go to the best ranked
    assert sorted(c for cs in server.values() for c in cs) == list(range(g))


def test_random_selector_with_available_picks_distinct_available_clients() -> None:
    sel = RandomSelector(50, M=3)
    out = sel.select(None, ["add"] * 200, np.random.default_rng(1), available=[4, 9, 17, 30])
    assert all(len(set(p)) == 3 and set(p) <= {4, 9, 17, 30} for p in out)
    counts = np.bincount([k for p in out for k in p], minlength=50)[[4, 9, 17, 30]]
    assert counts.min() > 100  # roughly uniform: 600 picks over 4 clients


def test_competence_selector_ranks_known_competence_and_breaks_ties_randomly() -> None:
    table = {"add": [0.9, 0.5, 0.9, 0.1], "mul": [0.2, 0.8, 0.3, 0.8]}
    sel = CompetenceSelector(lambda d: table[d], M=2)
    firsts = set()
    for seed in range(20):
        add, mul = sel.select(None, ["add", "mul"], np.random.default_rng(seed))
        assert set(add) == {0, 2} and set(mul) == {1, 3}
        firsts.add(add[0])
    assert firsts == {0, 2}  # the tie between clients 0 and 2 goes either way
    only = sel.select(None, ["add"], np.random.default_rng(0), available=[1, 3])
    assert only == [[1, 3]]
