"""Sim mode: the scenario's clients become simulated devices (simpy, virtual time).

* model-in-the-loop (``sim.reward_source: model``): the trainer rolls out, then
  :class:`SimGatherer` runs exactly one simulated round in which each device's *real* ONNX
  scorer computes the rewards it returns, if and when it answers before the deadline.
* timing-only (``sim.reward_source: timing``): no model at all; a surrogate draws rewards
  from each client's competence, so fleets of 10,000 clients run in seconds.

Both go through :mod:`sim.engine`, which drives :mod:`fedgrpo.rounds` — the same code the asyncio gatherer uses.
The simulator's configuration comes from :func:`fedgrpo.scenarios.mapping.sim_config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedgrpo.experiments.context import Context, load_scorers, per_client_reward_fn
from fedgrpo.rounds import RoundOutcome, RoundStats, round_stats
from fedgrpo.scenarios.behaviour_section import device_rewards
from fedgrpo.scenarios.mapping import sim_config
from fedgrpo.scenarios.schema import Scenario
from fedgrpo.server.gathering.base import GatherRequest, GatherResult, idle_clients
from fedgrpo.server.gathering.late import late_rewards, outstanding_slots


def outcome_stats(outcome: RoundOutcome, record: dict[str, Any]) -> RoundStats:
    """The one per-round record of a simulated round (its counts from ``outcome``, the device
    side from the simulator's ``record``)."""
    return round_stats(
        outcome.counts(),
        offline=record.get("offline", 0),
        crashed=record.get("crashed", 0),
        closed_by=record.get("closed_by"),
        duration_s=record.get("duration_s", 0.0),
        wasted_device_s=record.get("wasted_device_s", 0.0),
        bytes_sent=record.get("bytes_sent", 0),
        bytes_received=record.get("bytes_received", 0),
        participation={p: v["answered"] for p, v in record.get("participation", {}).items()},
        stale_used=record.get("stale_used", 0),
    )


_JOURNAL_KEYS = ("round_index", "questions", "candidates", "experts", "domains", "answers")


class SimGatherer:
    """One simulated round per :meth:`gather` call, with real scorers producing the rewards."""

    def __init__(self, s: Scenario, score_fns: list[Any], seed: int) -> None:
        from fedgrpo.sim.engine import ModelRewards, RoundInput, Simulator

        self._round_input_cls = RoundInput
        self._input: Any = None
        self._outcome: RoundOutcome | None = None
        self._record: dict[str, Any] = {}
        self.score_fns = score_fns
        # each client scores with its own group's reward_mode / format_weight
        self.devices = device_rewards(s)  # behaviour + LDP per client (edge/device_rewards.py)
        rewards = ModelRewards(per_client_reward_fn(s, score_fns), devices=self.devices)
        self.sim = Simulator(sim_config(s), seed, rewards, self._source, self._on_end)
        self.sim_round = 0
        self._experts: dict[int, list[list[int]]] = {}  # async: expert lists of recent rounds
        self._stale_seen = 0
        self._reward_fn = per_client_reward_fn(s, score_fns)
        self._seed = seed
        self._probes: list[dict[str, Any]] = []  # journalled with the next round

    def _source(self, r: int, rng: np.random.Generator) -> Any:
        return self._input

    def _on_end(self, outcome: RoundOutcome, record: dict[str, Any]) -> None:
        self._outcome, self._record = outcome, record

    # ------------------------------------------------------------- exact resume
    journal: Path | None = None

    def open_journal(self, path: Path, resume_round: int | None) -> None:
        """Record every round's input in ``path`` (one JSON line per round). Resuming at
        ``resume_round`` replays the journal's first rounds through the simulator, so its
        state -- virtual clock, device queues and stragglers, random streams, availability,
        async buffers -- is exactly the uninterrupted run's; later lines are dropped."""
        import json

        self.journal = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not resume_round:
            path.write_text("")
            return
        from fedgrpo.experiments.records import read_records
        from fedgrpo.server.checkpoint import CheckpointError

        entries = read_records(path) if path.exists() else []
        if len(entries) < resume_round:
            raise CheckpointError(
                f"{path} holds {len(entries)} rounds but the checkpoint is at round "
                f"{resume_round}; the simulator cannot be restored exactly: start afresh"
            )
        for entry in entries[:resume_round]:
            for probe in entry.get("probes", []):  # their releases count against DP budgets
                self._probe({int(k): v for k, v in probe["requests"].items()}, probe["round"])
            self._step(GatherRequest(**{k: entry[k] for k in _JOURNAL_KEYS}))
        path.write_text("".join(json.dumps(e) + "\n" for e in entries[:resume_round]))

    def _log(self, request: GatherRequest) -> None:
        if self.journal is None:
            return
        import json

        entry: dict[str, Any] = {k: getattr(request, k) for k in _JOURNAL_KEYS}
        if self._probes:
            entry["probes"], self._probes = self._probes, []
        with self.journal.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def gather(self, request: GatherRequest, rng: np.random.Generator) -> GatherResult:
        self._log(request)
        return self._step(request)

    def _step(self, request: GatherRequest) -> GatherResult:
        self._input = self._round_input_cls(
            questions=request.questions,
            domains=request.domains,
            candidates=request.candidates,
            correct=None,
            experts=request.experts,
        )
        r = self.sim_round
        self._experts[r] = request.experts
        self.sim.step_round(r)
        self.sim_round += 1
        assert self._outcome is not None
        rewards = self._outcome.rewards_by_expert(request.experts)
        stats = outcome_stats(self._outcome, self._record)
        stats["extra"]["virtual_now_s"] = float(self.sim.env.now)
        if self.sim.config.mode != "async":
            return GatherResult(rewards, stats)
        late = [
            reward
            for res in self.sim.stale_used[self._stale_seen :]
            for reward in late_rewards(
                res.origin_round, res.assignment, res.values, self._experts[res.origin_round]
            )
        ]
        self._stale_seen = len(self.sim.stale_used)
        for old in [k for k in self._experts if k < r - self.sim.config.max_staleness]:
            del self._experts[old]
        waiting = outstanding_slots(self._outcome, rewards.shape, request.experts)
        return GatherResult(rewards, stats, waiting, late)

    def idle_clients(self, available: Sequence[int] | None) -> Sequence[int] | None:
        """Async: ``available`` without the clients still busy with an earlier round's
        straggler (:meth:`fedgrpo.sim.engine.Simulator.busy_clients`)."""
        return idle_clients(available, self.sim.busy_clients(), self.sim.n)

    def competence(
        self, clients: Any, questions: Any, answers: Any
    ) -> dict[int, list[float] | None]:
        """Competence bits are collected once at enrolment, outside the timed rounds."""
        from fedgrpo.edge.protocol import CompetenceRequest

        out: dict[int, list[float] | None] = {}
        for k in clients:
            req = CompetenceRequest(f"competence-c{k}", tuple(questions), tuple(answers))
            out[k] = list(self.score_fns[k](req).values)
        return out

    def probe(
        self, requests: Mapping[int, tuple[Sequence[str], Sequence[str]]], round_index: int
    ) -> dict[int, list[float] | None]:
        """Client k's rewards for its probe ``(questions, completions)`` (``grpo/trust.py``):
        an ordinary score request through the device's behaviour and privacy, drawing from
        the ``(seed, round, client, "probe")`` stream; None once its budget is spent."""
        plain = {k: (list(q), list(c)) for k, (q, c) in requests.items()}
        self._probes.append({"round": round_index, "requests": plain})
        return self._probe(plain, round_index)

    def _probe(
        self, requests: Mapping[int, tuple[Sequence[str], Sequence[str]]], round_index: int
    ) -> dict[int, list[float] | None]:
        from fedgrpo.edge.protocol import ScoreRequest
        from fedgrpo.sim.rewards import device_scores
        from fedgrpo.sim.rng import ClientStream, stream_generator

        out: dict[int, list[float] | None] = {}
        for k, (qs, cs) in requests.items():
            request = ScoreRequest(f"r{round_index}-p{k}", tuple(qs), tuple(cs))
            device = self.devices[k] if self.devices[k].active else None
            stream = ClientStream(stream_generator(self._seed, k, "probe", round_index))
            values = list(device_scores(self._reward_fn, k, request, device, stream))
            out[k] = values if values else None  # empty: its privacy budget is spent
        return out


def make_sim_gatherer(ctx: Context) -> tuple[Any, Any]:
    from fedgrpo.experiments.context import scorer_fn

    scorers = load_scorers(ctx)
    fns = [scorer_fn(sc, c.id) for sc, c in zip(scorers, ctx.clients)]
    return SimGatherer(ctx.scenario, fns, ctx.scenario.seed), None


# --------------------------------------------------------------------------- timing-only


def timing_competences(s: Scenario) -> list[dict[str, float]]:
    """Surrogate judge quality per client and domain: a client judges its own domains well
    (0.95) and others at chance (0.5). Without models this is the only competence there is."""
    from fedgrpo.experiments.context import client_domains, zoo_spec

    spec = zoo_spec(s)
    held = client_domains(spec)
    out = []
    for c in s.client_list():
        own = held[c.index % len(held)]
        out.append({d: (0.95 if d in own else 0.5) for d in s.tasks.domains})
    return out


def run_timing_only(s: Scenario, run_dir: Path, resume: bool) -> dict[str, Any]:
    """A fleet study without models: virtual time, surrogate rewards, no GRPO update."""
    import time

    from fedgrpo.experiments.records import write_summary
    from fedgrpo.experiments.tracking import TrackedWriter
    from fedgrpo.sim.engine import run_simulation

    start = time.perf_counter()
    config = sim_config(s, timing_competences(s))
    if s.sim.engine == "vectorised":
        from fedgrpo.sim.vectorised import run_vectorised

        result = run_vectorised(config, s.rounds, seed=s.seed)
    else:
        result = run_simulation(config, s.rounds, seed=s.seed, reward_source="timing")
    with TrackedWriter(s, run_dir, resume_after_round=-1 if resume else None) as writer:
        for rec in result.rounds:
            stats = {k: v for k, v in rec.items() if k not in ("coverage", "participation", "round")}
            row = {
                **stats,
                "round": int(rec["round"]) + 1,
                "time_s": float(rec["t_close"]),
                "coverage": float(rec.get("coverage_mean", 0.0)),
                "participation": {p: v["answered"] for p, v in rec.get("participation", {}).items()},
                "loss": None,
                "reward_mean": None,
                "lora_bytes": 0,
            }
            writer.round(row)
    summary = {
        "scenario": s.name,
        "mode": s.mode,
        "seed": s.seed,
        "reward_source": "timing",
        "rounds_completed": len(result.rounds),
        "initial_mean_accuracy": None,
        "final_mean_accuracy": None,
        "best_mean_accuracy": None,
        "total_bytes": int(sum(r["bytes_sent"] + r["bytes_received"] for r in result.rounds)),
        "lora_total_bytes": 0,
        "wall_s": round(time.perf_counter() - start, 2),
        "virtual_s": round(float(result.rounds[-1]["t_close"]) if result.rounds else 0.0, 3),
        "mean_coverage": float(np.mean([r.get("coverage_mean", 0.0) for r in result.rounds]))
        if result.rounds
        else 0.0,
        "status": "finished",
        **{k: v for k, v in result.summary().items() if isinstance(v, (int, float, str))},
    }
    write_summary(run_dir, summary)
    return summary
