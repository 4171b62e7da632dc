"""Run one scenario end to end: ``run_scenario(scenario, run_dir, resume)`` -> summary.

The loop is the same for every mode; only the reward gatherer differs:
``sim`` (simulated devices in virtual time), ``emulate`` (real edge processes on loopback
with injected faults) and ``live`` (real devices). Ctrl-C checkpoints and leaves a run that
``fedgrpo run --resume DIR`` continues.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedgrpo.errors import ConfigError
from fedgrpo.experiments.context import Context, auxiliary_set, build_context, resolve_model
from fedgrpo.experiments.enrolment import refresh_competence
from fedgrpo.experiments.provenance import write_provenance
from fedgrpo.experiments.records import write_summary
from fedgrpo.experiments.signals import sigterm_as_interrupt
from fedgrpo.experiments.tracking import TrackedWriter
from fedgrpo.scenarios.behaviour_section import make_aggregator, run_outputs
from fedgrpo.scenarios.mapping import (
    device_config,
    experts_ranked,
    grpo_config,
    late_rewards,
    lora_spec,
    prompt_config,
)
from fedgrpo.scenarios.schema import Scenario
from fedgrpo.server.checkpoint import has_checkpoint, prune

log = logging.getLogger(__name__)


def _make_gatherer(ctx: Context) -> tuple[Any, Any]:
    """(gatherer, closer). Timing/fault layers wrap the in-process scorers per mode."""
    s = ctx.scenario
    from fedgrpo.server.gathering.base import CentralGatherer

    if s.server.baseline != "fedgrpo":
        return CentralGatherer(ctx.suite.task.is_correct), None
    if s.mode == "sim":
        from fedgrpo.experiments.runtimes.sim import make_sim_gatherer

        return make_sim_gatherer(ctx)
    if s.mode == "emulate":
        from fedgrpo.experiments.runtimes.emulate import make_emulate_gatherer

        return make_emulate_gatherer(ctx)
    if s.mode == "live":
        from fedgrpo.experiments.runtimes.live import make_live_gatherer

        return make_live_gatherer(ctx)
    raise ConfigError(f"mode {s.mode!r} is unknown; use sim, emulate or live")


def _selector_and_embedder(
    ctx: Context, model: Any, tokenizer: Any, gatherer: Any
) -> tuple[Any, Any, Any, list[Any]]:
    """Selector, question embedder, competence matrix and auxiliary set (confidence graph)."""
    import copy

    from fedgrpo.edge.answer_format import make_prompt
    from fedgrpo.selection.competence import CompetenceMatrix
    from fedgrpo.selection.selectors import make_selector
    from fedgrpo.server.encoder import embed_texts

    s = ctx.scenario
    sel = s.selection
    if s.server.baseline != "fedgrpo":
        return None, None, None, []
    frozen = copy.deepcopy(model).eval()  # embeddings must not drift while the policy trains
    aux = auxiliary_set(ctx)

    def embed(questions: list[str]) -> np.ndarray:
        return embed_texts(
            frozen, tokenizer, [make_prompt(q) for q in questions], layer=sel.encoder_layer
        )

    competence = None
    aux_emb = None
    if sel.selector == "confidence_graph":
        aux_emb = embed([i.question for i in aux])
        competence = CompetenceMatrix(len(aux), [c.id for c in ctx.clients])
    selector = make_selector(
        sel.selector,
        num_clients=len(ctx.clients),
        M=experts_ranked(s),  # the M primaries first, then the over-selection reserve
        L=sel.L,
        prior=sel.prior,
        aux_embeddings=aux_emb,
        competence=competence,
        client_domains=ctx.client_domains,
    )
    return selector, embed, competence, aux


def _eval_record(trainer: Any, s: Scenario, time_s: float) -> dict[str, Any]:
    result = trainer.evaluate(s.eval.per_domain)
    return {
        "round": trainer.state.round,
        "time_s": time_s,
        "accuracy": result.accuracy,
        "mean_accuracy": result.mean_accuracy,
        "format_rate": result.format_rate,
        "accuracy_given_format": result.accuracy_given_format,
        # per test item, in order, 1 = correct: lets any two evaluations be compared paired
        # (a list, so pandas and CSV readers keep every item; runs before 0.2 wrote "0101")
        "correct_items": [1 if c else 0 for c in result.correct],
    }


def _paired_change(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any] | None:
    """Sign test of the last evaluation against the first on the same test items."""
    from fedgrpo.server.stats import paired_sign_test

    before, after = first.get("correct_items"), last.get("correct_items")
    if not before or not after or len(before) != len(after):
        return None
    cmp = paired_sign_test([bool(int(c)) for c in before], [bool(int(c)) for c in after])
    return {
        "gained": cmp.gained,
        "lost": cmp.lost,
        "items": cmp.n,
        "p_value": cmp.p_value,
        "significant_at_0.05": cmp.significant(),
    }


def run_scenario(scenario: Scenario, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) ``scenario`` into ``run_dir``; returns the summary written there."""
    write_provenance(scenario, run_dir, resume)  # provenance.json: commit, versions, models...
    with sigterm_as_interrupt():
        return _run_scenario(scenario, run_dir, resume)


@dataclass
class _Run:
    """Everything one model-in-the-loop run's steps share."""

    s: Scenario
    run_dir: Path
    ctx: Context
    gatherer: Any
    trainer: Any
    aux: list[Any]
    clock: dict[str, float]
    resumed_round: int | None
    lora_bytes: int
    writer: TrackedWriter | None = None
    evals: list[dict[str, Any]] = field(default_factory=list)
    start: float = 0.0

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def checkpoint(self) -> None:
        self.clock["wall_offset"] = time.perf_counter() - self.start
        self.trainer.save_checkpoint(self.ckpt_dir, {"clock": self.clock})
        if self.writer is not None:  # trackers that cannot drop points get rounds now
            self.writer.commit(self.trainer.state.round)


def _run_scenario(s: Scenario, run_dir: Path, resume: bool) -> dict[str, Any]:
    if not s.models_needed:
        from fedgrpo.experiments.runtimes.sim import run_timing_only

        return run_timing_only(s, run_dir, resume)
    ctx, model, tokenizer = _load_models(s)
    gatherer, closer = _make_gatherer(ctx)
    try:
        run = _prepare(ctx, run_dir, model, tokenizer, gatherer, resume)
        return _train(run)
    finally:
        if closer is not None:
            closer()


def _load_models(s: Scenario) -> tuple[Context, Any, Any]:
    """The run's context (zoo built if needed) and the server model + tokenizer."""
    import torch

    from fedgrpo.server.adapters import wrap_lora
    from fedgrpo.server.device import place, prepare_model
    from fedgrpo.server.zoo.loading import load_causal_lm

    if s.server.threads is not None:
        torch.set_num_threads(s.server.threads)
    placement = place(device_config(s))  # a cuda without GPU fails here, before loading
    ctx = build_context(s)
    model, tokenizer = load_causal_lm(resolve_model(ctx, s.server.model))
    model = prepare_model(model, device_config(s), placement)
    spec = lora_spec(s)
    if spec is not None:  # after placement: the adapter is created on the model's device
        model = wrap_lora(model, spec, seed=s.seed)
    return ctx, model, tokenizer


def _prepare(
    ctx: Context, run_dir: Path, model: Any, tokenizer: Any, gatherer: Any, resume: bool
) -> _Run:
    """Trainer (config from the scenario mapping), resumed state and the sim journal."""
    from fedgrpo.server.comm import lora_bytes_per_round
    from fedgrpo.server.prompting import PromptFormatter, prompted_suite
    from fedgrpo.server.trainer import FedGRPOTrainer

    s = ctx.scenario
    selector, embed, competence, aux = _selector_and_embedder(ctx, model, tokenizer, gatherer)
    trainer = FedGRPOTrainer(
        model,
        tokenizer,
        prompted_suite(ctx.suite, PromptFormatter(tokenizer, prompt_config(s), ctx.suite)),
        gatherer,
        selector,
        grpo_config(s),
        seed=s.seed,
        baseline=s.server.baseline,
        question_embedder=embed,
        late=late_rewards(s) if s.round_policy.async_ else None,
    )
    trainer.competence = competence
    trainer.aggregator = make_aggregator(s, lambda: trainer.competence)
    lora = lora_bytes_per_round(model.config, rank=8, clients_per_round=1)
    clock = {"virtual_s": 0.0, "wall_offset": 0.0}
    run = _Run(s, run_dir, ctx, gatherer, trainer, aux, clock, None, lora)
    if resume:
        run.resumed_round = _resume(run)
    if hasattr(gatherer, "open_journal"):  # sim: replay restores the simulator exactly
        gatherer.open_journal(run_dir / "sim_journal.jsonl", run.resumed_round)
    return run


def _resume(run: _Run) -> int:
    """The round to continue after. No checkpoint yet (killed before the first one): start
    over, dropping the records the dead run wrote; a damaged one falls back or raises
    CheckpointError."""
    resumed_round = 0
    if has_checkpoint(run.ckpt_dir):
        extra = run.trainer.load_checkpoint(run.ckpt_dir)
        run.clock.update(extra.get("clock", {}))
        resumed_round = run.trainer.state.round
        for note in extra.get("checkpoint_skipped", []):
            print(f"[fedgrpo] checkpoint refused: {note}; resuming from {extra['checkpoint']}")
    log.info("resumed %s at round %d", run.run_dir, resumed_round)
    return resumed_round


def _train(run: _Run) -> dict[str, Any]:
    """The round loop with checkpoint-on-interrupt; always writes the summary."""
    s = run.s
    run.writer = TrackedWriter(s, run.run_dir, resume_after_round=run.resumed_round)
    run.start = time.perf_counter() - run.clock["wall_offset"]
    run.evals = [r for r in run.writer.records if r.get("event") == "eval"]
    status, error = "finished", None
    try:
        _round_loop(run)
        if s.outputs.save_model:
            _save_policy(run)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see experiments/signals.py)
        status = "interrupted"
        run.checkpoint()
        raise
    except BaseException as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        run.writer.close(status)
        summary = _summary(run, status, error)
        write_summary(run.run_dir, summary)
    return summary


def _save_policy(run: _Run) -> None:
    """RUN_DIR/final_model: the policy + tokenizer as a HF directory (written aside, renamed)."""
    import shutil

    from fedgrpo.server.adapters import merged_copy

    final, tmp = run.run_dir / "final_model", run.run_dir / ".final_model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    # with server.lora: the adapter folded in, so final_model loads without peft
    merged_copy(run.trainer.model).save_pretrained(tmp)
    run.trainer.tokenizer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _evaluate(run: _Run, time_s: float) -> None:
    assert run.writer is not None
    run.evals.append(_eval_record(run.trainer, run.s, time_s))
    run.writer.eval(run.evals[-1])


def _round_loop(run: _Run) -> None:
    from tqdm import tqdm

    s, trainer = run.s, run.trainer
    if not run.evals and s.eval.at_start:
        _evaluate(run, 0.0)
    tty = s.outputs.progress and sys.stderr.isatty()
    bar = tqdm(
        total=s.rounds, initial=trainer.state.round, desc=s.name, unit="round", disable=not tty
    )
    every = s.eval.every or 10  # not a TTY: one line per this many rounds instead of a bar
    while trainer.state.round < s.rounds:
        rec = _one_round(run)
        status = {
            "reward": f"{rec['reward_mean'] or 0:.2f}",
            "cov": f"{rec['coverage']:.2f}",
            "acc": f"{run.evals[-1]['mean_accuracy']:.3f}" if run.evals else "-",
        }
        bar.update(1)
        bar.set_postfix(**status)
        r = trainer.state.round
        if s.outputs.progress and not tty and (r % every == 0 or r == s.rounds):
            line = " ".join(f"{k}={v}" for k, v in status.items())
            print(f"[{s.name}] round {r}/{s.rounds} {line}", file=sys.stderr, flush=True)
    bar.close()


def _one_round(run: _Run) -> dict[str, Any]:
    """Refresh competence, step the trainer, record, evaluate and checkpoint when due."""
    s, trainer = run.s, run.trainer
    assert run.writer is not None
    if trainer.competence is not None:
        every = s.selection.refresh_every
        r0 = trainer.state.round
        ctx, agg = run.ctx, trainer.aggregator
        if refresh_competence(ctx, run.gatherer, trainer.competence, run.aux, r0, every, agg):
            (run.run_dir / "competence.json").write_text(trainer.competence.to_json())
    rec = trainer.step()
    duration = float(rec.get("duration_s") or 0.0)
    run.clock["virtual_s"] += duration
    asked_clients = {c for row in rec.pop("experts") for c in row}
    rec["round"] = r = trainer.state.round
    rec["duration_s"] = duration
    rec["time_s"] = run.clock["virtual_s"] if s.mode == "sim" else time.perf_counter() - run.start
    rec["lora_bytes"] = run.lora_bytes * max(1, len(asked_clients))
    run.writer.round(rec)
    if (s.eval.every and r % s.eval.every == 0) or r == s.rounds:
        _evaluate(run, rec["time_s"])
    if (s.checkpoint.every and r % s.checkpoint.every == 0) or r == s.rounds:
        run.checkpoint()
        prune(run.ckpt_dir, s.checkpoint.keep)
    return rec


def _summary(run: _Run, status: str, error: str | None) -> dict[str, Any]:
    s, evals = run.s, run.evals
    assert run.writer is not None
    rounds = [r for r in run.writer.records if r.get("event") == "round"]
    first, last = (evals[0], evals[-1]) if evals else ({}, {})
    summary: dict[str, Any] = {
        "scenario": s.name,
        "mode": s.mode,
        "seed": s.seed,
        "baseline": s.server.baseline,
        "selector": s.selection.selector,
        "rounds_completed": run.trainer.state.round,
        "initial_mean_accuracy": first.get("mean_accuracy"),
        "final_mean_accuracy": last.get("mean_accuracy"),
        "best_mean_accuracy": max((e["mean_accuracy"] for e in evals), default=None),
        "accuracy_change": _paired_change(first, last) if evals else None,
        "initial_format_rate": first.get("format_rate"),
        "final_format_rate": last.get("format_rate"),
        "initial_accuracy": first.get("accuracy"),
        "final_accuracy": last.get("accuracy"),
        "total_bytes": int(
            sum(r.get("bytes_sent", 0) + r.get("bytes_received", 0) for r in rounds)
        ),
        "lora_total_bytes": int(sum(r.get("lora_bytes", 0) for r in rounds)),
        "wall_s": round(time.perf_counter() - run.start, 2),
        "virtual_s": round(run.clock["virtual_s"], 3),
        "status": status,
    }
    summary.update(run_outputs(s, run.trainer, run.gatherer))  # behaviours, trust, privacy
    if error is not None:
        summary["error"] = error
    return summary
