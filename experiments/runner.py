"""Run one scenario end to end: ``run_scenario(scenario, run_dir, resume)`` -> summary.

The loop is the same for every mode; only the reward gatherer differs:
``sim`` (simulated devices in virtual time), ``emulate`` (real edge processes on loopback
with injected faults) and ``live`` (real devices). Ctrl-C checkpoints and leaves a run that
``fedgrpo run --resume DIR`` continues.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fedgrpo.experiments.context import (
    Context,
    auxiliary_set,
    build_context,
    load_scorers,
    resolve_model,
    scorer_fn,
)
from fedgrpo.experiments.records import MetricsWriter, write_summary
from fedgrpo.scenarios.schema import Scenario
from fedgrpo.server.checkpoint import has_checkpoint, prune

log = logging.getLogger(__name__)


def _make_gatherer(ctx: Context) -> tuple[Any, Any]:
    """(gatherer, closer). Timing/fault layers wrap the in-process scorers per mode."""
    s = ctx.scenario
    from fedgrpo.server.gathering.base import CentralGatherer, DirectGatherer

    if s.server.baseline != "fedgrpo":
        return CentralGatherer(), None
    if s.mode == "sim":
        from fedgrpo.experiments.runtimes.sim import make_sim_gatherer

        return make_sim_gatherer(ctx)
    if s.mode == "emulate":
        from fedgrpo.experiments.runtimes.emulate import make_emulate_gatherer

        return make_emulate_gatherer(ctx)
    if s.mode == "live":
        from fedgrpo.experiments.runtimes.live import make_live_gatherer

        return make_live_gatherer(ctx)
    scorers = load_scorers(ctx)
    return DirectGatherer([scorer_fn(sc, c.id) for sc, c in zip(scorers, ctx.clients)]), None


def refresh_competence(
    ctx: Context, gatherer: Any, competence: Any, aux: list[Any], round_index: int, every_n: int
) -> list[str]:
    """Ask clients that were never measured (or not for ``every_n`` rounds) for competence
    bits on the auxiliary set. A client that fails stays unknown: the selector gives it the
    prior, so it keeps being explored. Returns the ids that answered."""
    ids = competence.needs_refresh(round_index, every_n)
    index = {c.id: c.index for c in ctx.clients}
    if not ids:
        return []
    bits = gatherer.competence(
        [index[i] for i in ids], [a.question for a in aux], [a.answer for a in aux]
    )
    answered = []
    for k, values in bits.items():
        if values is not None:
            competence.update(ctx.clients[k].id, list(range(len(aux))), values, round=round_index)
            answered.append(ctx.clients[k].id)
    return answered


def _selector_and_embedder(
    ctx: Context, model: Any, tokenizer: Any, gatherer: Any
) -> tuple[Any, Any, Any, list[Any]]:
    """Selector, question embedder, competence matrix and auxiliary set (confidence graph)."""
    import copy

    from fedgrpo.edge.answer_format import make_prompt
    from fedgrpo.server.encoder import embed_texts
    from fedgrpo.server.selection.competence import CompetenceMatrix
    from fedgrpo.server.selection.selectors import make_selector

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
        M=sel.M + s.round_policy.over_selection,  # over-selected experts are ranked after the M
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
        # per test item, in order, "1" = correct: lets any two evaluations be compared paired
        "correct_items": "".join("1" if c else "0" for c in result.correct),
    }


def _paired_change(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any] | None:
    """Sign test of the last evaluation against the first on the same test items."""
    from fedgrpo.server.stats import paired_sign_test

    before, after = first.get("correct_items"), last.get("correct_items")
    if not before or not after or len(before) != len(after):
        return None
    cmp = paired_sign_test([c == "1" for c in before], [c == "1" for c in after])
    return {
        "gained": cmp.gained,
        "lost": cmp.lost,
        "items": cmp.n,
        "p_value": cmp.p_value,
        "significant_at_0.05": cmp.significant(),
    }


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (what ``timeout``, SLURM and ``docker stop`` send) raises KeyboardInterrupt, so
    a terminated run checkpoints and writes its summary exactly like Ctrl-C."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_scenario(scenario: Scenario, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) ``scenario`` into ``run_dir``; returns the summary written there."""
    with sigterm_as_interrupt():
        return _run_scenario(scenario, run_dir, resume)


def _run_scenario(scenario: Scenario, run_dir: Path, resume: bool) -> dict[str, Any]:
    s = scenario
    if not s.models_needed:
        from fedgrpo.experiments.runtimes.sim import run_timing_only

        return run_timing_only(s, run_dir, resume)
    import torch
    from tqdm import tqdm

    from fedgrpo.server.comm import lora_bytes_per_round
    from fedgrpo.server.trainer import FedGRPOTrainer, GRPOConfig
    from fedgrpo.server.zoo.loading import load_causal_lm

    if s.server.threads is not None:
        torch.set_num_threads(s.server.threads)
    ctx = build_context(s)
    model, tokenizer = load_causal_lm(resolve_model(ctx, s.server.model))
    gatherer, closer = _make_gatherer(ctx)
    try:
        selector, embed, competence, aux = _selector_and_embedder(ctx, model, tokenizer, gatherer)
        g = s.server.grpo
        trainer = FedGRPOTrainer(
            model,
            tokenizer,
            ctx.suite,
            gatherer,
            selector,
            GRPOConfig(
                group_size=g.group_size,
                questions_per_round=g.questions_per_round,
                temperature=g.temperature,
                top_p=g.top_p,
                max_new_tokens=g.max_new_tokens,
                lr=g.lr,
                eps_low=g.eps_low,
                eps_high=g.eps_high,
                beta=g.beta,
                num_iterations=g.num_iterations,
                loss_type=g.loss_type,
                scale=g.scale,
                reward_combine=g.reward_combine,
                trim=g.trim,
                grad_clip=g.grad_clip or 1e9,
                optimizer=g.optimizer,
                adam_beta1=g.adam_beta1,
                adam_beta2=g.adam_beta2,
                sgd_momentum=g.sgd_momentum,
                warmup_rounds=g.warmup_rounds,
                lr_decay_rounds=s.rounds if g.lr_decay_rounds is None else g.lr_decay_rounds,
                lr_final_fraction=g.lr_final_fraction,
                negative_advantage_scale=g.negative_advantage_scale,
                shuffle_rewards=g.shuffle_rewards,
            ),
            seed=s.seed,
            baseline=s.server.baseline,
            question_embedder=embed,
        )
        trainer.competence = competence
        ckpt_dir = run_dir / "checkpoints"
        clock = {"virtual_s": 0.0, "wall_offset": 0.0}
        resumed_round = None
        if resume:
            # no checkpoint yet (killed before the first one): start over, dropping the
            # records the dead run wrote; a damaged one falls back or raises CheckpointError
            resumed_round = 0
            if has_checkpoint(ckpt_dir):
                extra = trainer.load_checkpoint(ckpt_dir)
                clock.update(extra.get("clock", {}))
                resumed_round = trainer.state.round
                for note in extra.get("checkpoint_skipped", []):
                    print(f"[fedgrpo] checkpoint refused: {note}; resuming from {extra['checkpoint']}")
            log.info("resumed %s at round %d", run_dir, resumed_round)
        if hasattr(gatherer, "open_journal"):  # sim: replay restores the simulator exactly
            gatherer.open_journal(run_dir / "sim_journal.jsonl", resumed_round)
        writer = MetricsWriter(run_dir, csv=s.outputs.csv, resume_after_round=resumed_round)
        start = time.perf_counter() - clock["wall_offset"]
        lora = lora_bytes_per_round(model.config, rank=8, clients_per_round=1)
        status = "finished"
        error: str | None = None
        evals = [r for r in writer.records if r.get("event") == "eval"]
        try:
            if not evals and s.eval.at_start:
                evals.append(_eval_record(trainer, s, 0.0))
                writer.eval(evals[-1])
            bar = tqdm(
                total=s.rounds,
                initial=trainer.state.round,
                desc=s.name,
                unit="round",
                disable=not s.outputs.progress,
            )
            while trainer.state.round < s.rounds:
                if trainer.competence is not None:
                    fresh = refresh_competence(
                        ctx,
                        gatherer,
                        trainer.competence,
                        aux,
                        trainer.state.round,
                        s.selection.refresh_every,
                    )
                    if fresh:
                        (run_dir / "competence.json").write_text(trainer.competence.to_json())
                rec = trainer.step()
                duration = float(rec.get("duration_s") or 0.0)
                clock["virtual_s"] += duration
                asked_clients = {c for row in rec.pop("experts") for c in row}
                rec["round"] = trainer.state.round
                rec["duration_s"] = duration
                rec["time_s"] = (
                    clock["virtual_s"] if s.mode == "sim" else time.perf_counter() - start
                )
                rec["lora_bytes"] = lora * max(1, len(asked_clients))
                writer.round(rec)
                r = trainer.state.round
                if (s.eval.every and r % s.eval.every == 0) or r == s.rounds:
                    evals.append(_eval_record(trainer, s, rec["time_s"]))
                    writer.eval(evals[-1])
                if (s.checkpoint.every and r % s.checkpoint.every == 0) or r == s.rounds:
                    clock["wall_offset"] = time.perf_counter() - start
                    trainer.save_checkpoint(ckpt_dir, {"clock": clock})
                    prune(ckpt_dir, s.checkpoint.keep)
                bar.update(1)
                bar.set_postfix(
                    reward=f"{rec['reward_mean'] or 0:.2f}",
                    cov=f"{rec['coverage']:.2f}",
                    acc=f"{evals[-1]['mean_accuracy']:.3f}" if evals else "-",
                )
            bar.close()
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see _sigterm_as_interrupt)
            status = "interrupted"
            clock["wall_offset"] = time.perf_counter() - start
            trainer.save_checkpoint(ckpt_dir, {"clock": clock})
            raise
        except BaseException as exc:
            status = "failed"
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            writer.close()
            rounds = [r for r in writer.records if r.get("event") == "round"]
            summary = {
                "scenario": s.name,
                "mode": s.mode,
                "seed": s.seed,
                "baseline": s.server.baseline,
                "selector": s.selection.selector,
                "rounds_completed": trainer.state.round,
                "initial_mean_accuracy": evals[0]["mean_accuracy"] if evals else None,
                "final_mean_accuracy": evals[-1]["mean_accuracy"] if evals else None,
                "best_mean_accuracy": max((e["mean_accuracy"] for e in evals), default=None),
                "accuracy_change": _paired_change(evals[0], evals[-1]) if evals else None,
                "initial_format_rate": evals[0]["format_rate"] if evals else None,
                "final_format_rate": evals[-1]["format_rate"] if evals else None,
                "initial_accuracy": evals[0]["accuracy"] if evals else None,
                "final_accuracy": evals[-1]["accuracy"] if evals else None,
                "total_bytes": int(
                    sum(r.get("bytes_sent", 0) + r.get("bytes_received", 0) for r in rounds)
                ),
                "lora_total_bytes": int(sum(r.get("lora_bytes", 0) for r in rounds)),
                "wall_s": round(time.perf_counter() - start, 2),
                "virtual_s": round(clock["virtual_s"], 3),
                "status": status,
            }
            if error is not None:
                summary["error"] = error
            write_summary(run_dir, summary)
        return summary
    finally:
        if closer is not None:
            closer()
