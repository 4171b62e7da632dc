"""The vectorised timing-only simulator: each round in closed form over arrays of clients.

Same inputs and the same semantics as the event engine (:class:`fedgrpo.sim.Simulator`) for
timing-only studies: the round's questions, experts and candidate dispatch come from the same
server stream and functions (:func:`fedgrpo.sim.rewards.surrogate_rounds`,
:meth:`fedgrpo.selection.RandomSelector.select_array`, :func:`fedgrpo.sim.selection.split_orders`,
:func:`fedgrpo.rounds.dispatch.chunk_sizes`), device timing from
:func:`fedgrpo.sim.devices.device_timing`, every draw from the same ``(seed, round, client,
purpose)`` streams; :mod:`fedgrpo.sim.vround` computes the round. The records are the event
engine's (``tests/test_sim_vectorised.py`` checks them against it, round by round).

    >>> from fedgrpo.sim import SimConfig
    >>> from fedgrpo.sim.vectorised import run_vectorised
    >>> res = run_vectorised(SimConfig.mixed(100_000, {"rpi4": 1, "phone-4g": 1}), rounds=10)

Supported: ``mode="sync"``, ``cancel_queued=True``, the ``random`` and ``top`` selectors,
``split`` and ``broadcast`` dispatch, any availability. Not modelled (use the event engine):
async mode, model-in-the-loop rewards, per-request rows. ``SimResult.events`` is 0 (there is
no event loop).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedgrpo.errors import ConfigError
from fedgrpo.rounds import experts_to_ask
from fedgrpo.rounds.dispatch import chunk_sizes
from fedgrpo.selection import RandomSelector
from fedgrpo.sim.config import SimConfig
from fedgrpo.sim.devices import DeviceTiming, device_timing, size_factor, timing_columns
from fedgrpo.sim.result import SimResult
from fedgrpo.sim.rewards import RoundInput, RoundSource, surrogate_rounds
from fedgrpo.sim.rng import round_keys, server_rng
from fedgrpo.sim.selection import check_experts, select_experts, split_orders
from fedgrpo.sim.vavail import AvailabilityTable
from fedgrpo.sim.vrecord import RoundArrays, vector_record
from fedgrpo.sim.vround import Fleet, PlanArrays, Rules
from fedgrpo.sim.vserver import FirstDraws, first_draws, simulate_round

__all__ = ["VectorisedSimulator", "run_vectorised"]


def check_supported(config: SimConfig) -> None:
    """What the vectorised path does not model, as a clear error."""
    if config.mode != "sync":
        raise ConfigError(
            f"SimConfig.mode={config.mode!r}: the vectorised simulator models sync rounds only; "
            "use the event engine (sim.engine: event) for async"
        )
    if not config.cancel_queued:
        raise ConfigError(
            "SimConfig.cancel_queued=False: the vectorised simulator drops cancelled queued "
            "requests (cancel_queued=True); use the event engine (sim.engine: event)"
        )


def build_fleet(config: SimConfig, seed: int) -> Fleet:
    """Per-client timing constants (as the event engine's ``make_devices``) as arrays."""
    w = config.workload
    tokens_per_cand = w.question_tokens + w.completion_tokens
    idx = np.empty(len(config.clients), dtype=np.int64)
    table: list[DeviceTiming] = []
    crash: list[float] = []
    slot: dict[tuple[Any, float, float | None], int] = {}
    for cid, spec in enumerate(config.clients):
        p = spec.device
        key = (p, size_factor(spec.size_class) * spec.speed_factor, spec.bandwidth_mbps)
        j = slot.get(key)
        if j is None:
            j = slot[key] = len(table)
            table.append(device_timing(p, key[1], w.decode_tokens, tokens_per_cand, key[2]))
            crash.append(p.crash_prob)
        idx[cid] = j
    return Fleet(
        timing_columns(table, idx), np.array(crash)[idx],
        _prefilled(AvailabilityTable(config.clients, seed)),
    )


def _prefilled(table: AvailabilityTable) -> AvailabilityTable:
    table.prefill()
    return table


def build_rules(config: SimConfig) -> Rules:
    p, w = config.policy, config.workload
    return Rules(
        p.deadline_s, config.connect_timeout_s, p.max_retries, p.retry_backoff_s,
        p.retry_min_remaining_s, p.quorum, p.round_quorum, p.close_early,
        config.request_overhead_bytes,
        int((w.question_tokens + w.completion_tokens) * w.chars_per_token) + 8,
        config.response_overhead_bytes, config.response_bytes_per_value,
    )  # fmt: skip


def _shards(config: SimConfig) -> tuple[list[int], int, int]:
    """The candidates per unit of a question, primaries (P) and answers a unit wants."""
    w = config.workload
    if w.dispatch == "broadcast":  # M primaries score all G; a unit is the whole group
        return [w.group_size], w.experts_per_question, w.experts_per_question
    sizes = [s for s in chunk_sizes(w.group_size, w.experts_per_question) if s]
    return sizes, len(sizes), 1


def plan_arrays(config: SimConfig, experts: np.ndarray) -> PlanArrays:
    """The plan layout of :func:`fedgrpo.rounds.build_plan` as arrays: per question the P
    primaries with a shard, then ``over_selection`` extras, extra ``j`` mirroring primary
    ``j % P``'s shard (``broadcast``: one unit per question)."""
    f, q = config.policy.over_selection, len(experts)
    sizes, p, need = _shards(config)
    per_group = len(sizes)
    j = np.arange(p + f)
    unit_j = np.where(j < p, j, (j - p) % p) % per_group  # broadcast: all in the one unit
    client = np.ascontiguousarray(experts[:, : p + f]).reshape(-1)
    unit = (np.arange(q)[:, None] * per_group + unit_j[None, :]).reshape(-1)
    unit_size = np.tile(np.array(sizes, dtype=np.int64), q)
    g = config.workload.group_size
    return PlanArrays(client, unit, unit_size[unit], unit_size, q, per_group, need, g)


def unit_candidates(config: SimConfig, orders: np.ndarray | None, q: int) -> np.ndarray:
    """``[units, max shard]``: each unit's candidates, sorted (-1 pads a shorter shard)."""
    sizes, _, _ = _shards(config)
    per_group, g = len(sizes), config.workload.group_size
    cands = np.full((q * per_group, max(sizes)), -1, dtype=np.int64)
    if orders is None:
        cands[:] = np.arange(g)
        return cands
    start = 0
    for u, s in enumerate(sizes):
        cands[u::per_group, :s] = np.sort(orders[:, start : start + s], axis=1)
        start += s
    return cands


@dataclass
class _Prepared:
    """A round's inputs, plan and first-send draws: what does not depend on earlier rounds."""

    inp: RoundInput
    orders: np.ndarray | None
    plan: PlanArrays
    keys: np.ndarray
    drawn: FirstDraws


class VectorisedSimulator:
    """Rounds one after another; ``keep_outcomes`` also keeps per-assignment statuses,
    attempts and the rewards grid of each round (for the equivalence tests).

    With ``pipeline`` (the default) a worker thread prepares round ``r + 1`` (its questions,
    experts, plan and first-send draws, none of which depends on round ``r``) and writes
    round ``r - 1``'s record while round ``r`` runs: numpy releases the GIL in its array
    loops, so this uses a second core. The records are the same either way (tested); the
    ``round_source`` is then called one round ahead, in that thread, and must not depend on
    earlier rounds' outcomes (the vectorised path never feeds them back)."""

    def __init__(
        self, config: SimConfig, seed: int = 0, round_source: RoundSource | None = None,
        keep_outcomes: bool = False, pipeline: bool = True,
    ) -> None:  # fmt: skip
        check_supported(config)
        self.config, self.seed = config, seed
        self.round_source = round_source or surrogate_rounds(config)
        self.fleet = build_fleet(config, seed)
        self.rules = build_rules(config)
        self.free_at = np.full(len(config.clients), -np.inf)
        self.profile_idx, self.profile_names = _profiles(config)
        self._comp: dict[str, np.ndarray] = {}
        self.keep_outcomes, self.pipeline = keep_outcomes, pipeline
        self.outcomes: list[dict[str, Any]] = []
        self.t = 0.0

    def _experts(self, r: int, inp: RoundInput, rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        n_ask = experts_to_ask(cfg.workload.experts_per_question, cfg.policy.over_selection)
        if inp.experts is None and cfg.workload.selector == "random":
            sel = RandomSelector(len(cfg.clients), M=n_ask)
            return sel.select_array(len(inp.questions), rng)  # select_experts, as an array
        experts = inp.experts
        if experts is None:
            experts = select_experts(inp.domains, cfg.clients, cfg.workload, cfg.policy, rng)
        check_experts(r, experts, len(inp.questions), len(cfg.clients))
        if any(len(ex) != n_ask or len(set(ex)) != n_ask for ex in experts):
            raise ConfigError(
                f"round {r}: the vectorised simulator needs {n_ask} distinct experts per "
                "question (M + over_selection); use the event engine for other lists"
            )
        return np.asarray(experts, dtype=np.int64)

    def _prepare(self, r: int) -> _Prepared:
        """Round ``r``'s inputs and first-send draws (pure: may run in the worker thread)."""
        cfg, w = self.config, self.config.workload
        rng = server_rng(self.seed, r)
        inp = self.round_source(r, rng)
        experts = self._experts(r, inp, rng)
        # the dispatch orders are the server stream's last draws of the round: only the
        # rewards grid (keep_outcomes) reads them
        split = self.keep_outcomes and w.dispatch != "broadcast"
        orders = split_orders(len(experts), w.group_size, rng) if split else None
        plan = plan_arrays(cfg, experts)
        keys = round_keys(self.seed, r, plan.client, "request")
        return _Prepared(inp, orders, plan, keys, first_draws(self.fleet, self.rules, plan, keys))

    def _play(self, r: int, p: _Prepared) -> RoundArrays:
        """Round ``r`` from the simulator's clock and device state (main thread only)."""
        cfg, plan = self.config, p.plan
        att, tl, view = simulate_round(
            self.fleet, self.rules, plan, p.keys, self.t, self.free_at, p.drawn
        )
        self.free_at = tl.device_free(plan, att, self.free_at)
        arrays = RoundArrays(r, self.t, plan, att, tl, view, cfg.policy.quorum)
        if self.keep_outcomes:
            cands = unit_candidates(cfg, p.orders, plan.groups)
            self.outcomes.append(self._outcome(arrays, cands, p.inp, r))
        self.t = view.t_close + cfg.update_s
        return arrays

    def _record(self, arrays: RoundArrays) -> dict[str, Any]:
        return vector_record(arrays, self.profile_idx, self.profile_names)

    def step(self, r: int) -> dict[str, Any]:
        """Round ``r`` now, without the worker thread: its record."""
        return self._record(self._play(r, self._prepare(r)))

    def _outcome(
        self, ra: RoundArrays, cands: np.ndarray, inp: RoundInput, r: int
    ) -> dict[str, Any]:
        from fedgrpo.sim.vrecord import rewards_grid

        rew, who = rewards_grid(ra, cands, inp, self._competence, r, self.seed)
        return {
            "status": ra.view.status,
            "attempts": ra.view.attempts,
            "rewards": rew,
            "experts": who,
        }

    def _competence(self, domain: str) -> np.ndarray:
        c = self._comp.get(domain)
        if c is None:
            c = self._comp[domain] = np.array(
                [spec.competence_on(domain) for spec in self.config.clients]
            )
        return c

    def run(self, rounds: int) -> SimResult:
        if not (isinstance(rounds, int) and rounds >= 0):
            raise ConfigError(f"rounds={rounds!r}; give an integer >= 0")
        t0 = time.perf_counter()
        if self.pipeline and rounds > 1:
            records = self._pipelined(rounds)
        else:
            records = [self.step(r) for r in range(rounds)]
        wall = time.perf_counter() - t0
        return SimResult(self.config, self.seed, records, [], wall, 0, [])

    def _pipelined(self, rounds: int) -> list[dict[str, Any]]:
        # one worker, tasks in submission order: prepare(r + 1), then record(r - 1)
        with ThreadPoolExecutor(1, thread_name_prefix="fedgrpo-vectorised") as pool:
            nxt = pool.submit(self._prepare, 0)
            done: list[Future[dict[str, Any]]] = []
            for r in range(rounds):
                prep = nxt.result()
                if r + 1 < rounds:
                    nxt = pool.submit(self._prepare, r + 1)
                done.append(pool.submit(self._record, self._play(r, prep)))
            return [f.result() for f in done]


def _profiles(config: SimConfig) -> tuple[np.ndarray, list[str]]:
    names: dict[str, int] = {}
    idx = np.array([names.setdefault(s.profile_name, len(names)) for s in config.clients])
    return idx, list(names)


def run_vectorised(
    config: SimConfig, rounds: int, seed: int = 0, round_source: RoundSource | None = None
) -> SimResult:
    """:func:`fedgrpo.sim.run_simulation` for timing-only studies, vectorised (see the
    module docstring for what it models)."""
    return VectorisedSimulator(config, seed, round_source).run(rounds)
