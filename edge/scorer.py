"""Turn candidate policies (question, completion) into scalar rewards on the device.

onnxruntime + tokenizers + numpy only. Reward modes (SPEC §3):

- ``answer`` (AE): the candidate's extracted answer equals the local answer table's answer
  for this question (matched via :func:`normalise_question`). A question the table does not
  hold scores **0.0** in explicit ``answer`` mode — use ``auto`` to fall back to the model.
- ``agreement`` (ME): the candidate's answer equals this device's own greedy answer to the
  question (greedy answers are cached per question).
- ``likelihood`` (ME): mean per-token probability, under the device model, of the candidate's
  final-answer tokens given the prompt and the completion up to the answer; one batched
  forward pass. No extractable answer → 0.0.
- ``format``: the completion follows the rationale + ``answer: N`` format → 1.0 else 0.0.
- ``auto``: AE when the table holds the question, else ME (``me_mode``: agreement or
  likelihood).

With ``format_weight`` w the reward is ``(1 - w) * main + w * format``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from fedgrpo.edge.answer_format import extract_answer, follows_format, make_prompt, normalise_answer
from fedgrpo.edge.answer_math import answer_credit
from fedgrpo.edge.answer_span import answer_span
from fedgrpo.edge.answer_table import AnswerTable
from fedgrpo.edge.manifest import (
    ANSWERS_NAME,
    TOKENIZER_NAME,
    Manifest,
    ManifestError,
    variant_filename,
)
from fedgrpo.edge.onnx_lm import OnnxCausalLM

ME_MODES = ("agreement", "likelihood")


@dataclass(frozen=True)
class ScorerConfig:
    """How a device runs its model. ``threads=None`` lets onnxruntime pick (all cores)."""

    variant: str = "fp32"
    threads: int | None = None
    me_mode: str = "agreement"
    max_new_tokens: int = 40
    forward_batch: int = 32
    greedy_cache_size: int = 4096
    verify_checksums: bool = True

    def __post_init__(self) -> None:
        if self.me_mode not in ME_MODES:
            raise ValueError(f"me_mode must be one of {ME_MODES}, got {self.me_mode!r}")
        if self.max_new_tokens < 1 or self.forward_batch < 1 or self.greedy_cache_size < 0:
            raise ValueError("max_new_tokens and forward_batch must be >= 1, cache size >= 0")


def dynamic_activations(manifest: Manifest, variant: str) -> bool:
    """Whether ``variant``'s activations are quantised dynamically (per run, over the whole
    batch): such a graph must be run row by row to keep rewards batch-invariant."""
    quantization = manifest.variants.get(variant, {}).get("quantization") or {}
    return "dynamic" in str(quantization.get("activations", ""))


class EdgeScorer:
    """Scores with an exported model directory (see :mod:`edge.export`)."""

    def __init__(
        self,
        model: OnnxCausalLM,
        tokenizer: Tokenizer,
        answers: AnswerTable,
        config: ScorerConfig,
        eos_token_id: int | None,
        name: str = "edge-model",
        manifest: Manifest | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.answers = answers
        self.config = config
        self.eos_token_id = eos_token_id
        self.name = name
        self.manifest = manifest
        # question -> the text the model continues; the plain zoo format unless a deployment
        # (or benchmarks/edge_fidelity.py) sets a chat prompt for an instruct model
        self.prompt: Callable[[str], str] = make_prompt
        self._greedy: OrderedDict[str, str | None] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, directory: str | Path, config: ScorerConfig | None = None) -> EdgeScorer:
        """Load an export directory, verifying the chosen variant's checksum first."""
        config = config or ScorerConfig()
        root = Path(directory)
        manifest = Manifest.read(root)
        if config.variant not in manifest.variants:
            raise ManifestError(
                f"{root} has variants {sorted(manifest.variants)}, not {config.variant!r}; "
                f"re-export with --quantize {config.variant}"
            )
        graph = variant_filename(config.variant)
        if config.verify_checksums:
            for name in (graph, TOKENIZER_NAME):
                manifest.verify_file(root, name)
            if manifest.answers_sha256 is not None:
                manifest.verify_file(root, ANSWERS_NAME)
        tokenizer = Tokenizer.from_file(str(root / TOKENIZER_NAME))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        pad = manifest.pad_token_id
        if pad is None:
            pad = manifest.eos_token_id if manifest.eos_token_id is not None else 0
        model = OnnxCausalLM(
            root / graph,
            pad_token_id=pad,
            max_length=manifest.max_length,
            threads=config.threads,
            forward_batch=config.forward_batch,
            row_by_row=dynamic_activations(manifest, config.variant),
        )
        answers_path = root / ANSWERS_NAME
        answers = AnswerTable.load(answers_path) if answers_path.is_file() else AnswerTable()
        name = Path(manifest.source_model.rstrip("/")).name or "edge-model"
        return cls(model, tokenizer, answers, config, manifest.eos_token_id, name, manifest)

    # ------------------------------------------------------------------ public API

    def score(
        self,
        questions: Sequence[str],
        completions: Sequence[str],
        reward_mode: str = "auto",
        format_weight: float = 0.0,
        partial_credit: float = 0.0,
    ) -> list[float]:
        """One reward in [0, 1] per (question, completion), in order.

        ``partial_credit`` > 0 gives a wrong numeric answer part of the reward where the
        reward compares answers (``answer``, ``agreement``, and ``auto``'s both):
        :func:`~fedgrpo.edge.answer_math.answer_credit`."""
        if len(questions) != len(completions):
            raise ValueError("questions and completions must have the same length")
        n = len(questions)
        fmt = [1.0 if follows_format(c) else 0.0 for c in completions]
        if reward_mode == "format":
            main = list(fmt)
        elif reward_mode == "answer":
            main = [
                self._answer_reward(q, c, partial_credit) or 0.0
                for q, c in zip(questions, completions)
            ]
        elif reward_mode in ME_MODES:
            main = self._model_rewards(questions, completions, range(n), reward_mode, partial_credit)
        elif reward_mode == "auto":
            main = [0.0] * n
            fallback: list[int] = []
            for i, (q, c) in enumerate(zip(questions, completions)):
                ae = self._answer_reward(q, c, partial_credit)
                if ae is None:
                    fallback.append(i)
                else:
                    main[i] = ae
            if fallback:
                me = self._model_rewards(
                    questions, completions, fallback, self.config.me_mode, partial_credit
                )
                for i, value in zip(fallback, me):
                    main[i] = value
        else:
            raise ValueError(f"unknown reward mode {reward_mode!r}")
        if format_weight <= 0.0:
            return main
        return [(1.0 - format_weight) * m + format_weight * f for m, f in zip(main, fmt)]

    def competence(self, questions: Sequence[str], reference_answers: Sequence[str]) -> list[float]:
        """1.0 where this device's greedy answer equals the reference, else 0.0."""
        if len(questions) != len(reference_answers):
            raise ValueError("questions and reference_answers must have the same length")
        answers = self.greedy_answers(questions)
        return [
            1.0 if a is not None and a == normalise_answer(ref) else 0.0
            for a, ref in zip(answers, reference_answers)
        ]

    def greedy_answers(self, questions: Sequence[str]) -> list[str | None]:
        """This device's greedy answer per question (``None`` if it gives none), cached."""
        with self._lock:
            missing = list(dict.fromkeys(q for q in questions if q not in self._greedy))
        if missing:
            texts = self.greedy_completions(missing)
            with self._lock:
                for q, text in zip(missing, texts):
                    self._greedy[q] = extract_answer(text)
                    self._greedy.move_to_end(q)
        result: list[str | None] = []
        with self._lock:
            for q in questions:
                if q in self._greedy:
                    self._greedy.move_to_end(q)
                    result.append(self._greedy[q])
                else:  # evicted between the two critical sections by a concurrent request
                    result.append(extract_answer(self.greedy_completions([q])[0]))
            while len(self._greedy) > self.config.greedy_cache_size:
                self._greedy.popitem(last=False)
        return result

    def greedy_completions(self, questions: Sequence[str]) -> list[str]:
        """Uncached greedy completions (text after the prompt), for agreement and competence."""
        prompts = [e.ids for e in self.tokenizer.encode_batch([self.prompt(q) for q in questions])]
        generated = self.model.greedy(prompts, self.config.max_new_tokens, self.eos_token_id)
        return list(self.tokenizer.decode_batch(generated, skip_special_tokens=True))

    def likelihoods(self, questions: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Mean probability of each completion's final-answer tokens (0.0 if none)."""
        rows: list[list[int]] = []
        targets: list[list[int]] = []
        owners: list[int] = []
        result = [0.0] * len(questions)
        texts: list[str] = []
        spans: list[tuple[int, int]] = []
        for i, (q, c) in enumerate(zip(questions, completions)):
            span = answer_span(c)
            if span is None:
                continue
            prompt = self.prompt(q)
            texts.append(prompt + c)
            spans.append((len(prompt) + span[0], len(prompt) + span[1]))
            owners.append(i)
        if not texts:
            return result
        limit = self.model.max_length
        for encoding, (lo, hi) in zip(self.tokenizer.encode_batch(texts), spans):
            ids = list(encoding.ids)
            positions = [
                t for t, (a, b) in enumerate(encoding.offsets) if b > a and a < hi and b > lo
            ]
            drop = max(0, len(ids) - limit)  # too long: keep the end, where the answer is
            rows.append(ids[drop:])
            targets.append([t - drop for t in positions if t - drop >= 1])
        for i, logprobs in zip(owners, self.model.gather_logprobs(rows, targets)):
            result[i] = float(np.exp(logprobs).mean()) if logprobs.size else 0.0
        return result

    def cache_clear(self) -> None:
        with self._lock:
            self._greedy.clear()

    # ------------------------------------------------------------------ helpers

    def _answer_reward(self, question: str, completion: str, partial: float = 0.0) -> float | None:
        """AE reward, or ``None`` if the local table does not hold the question."""
        trusted = self.answers.lookup(question)
        if trusted is None:
            return None
        return answer_credit(extract_answer(completion), trusted, partial)

    def _model_rewards(
        self,
        questions: Sequence[str],
        completions: Sequence[str],
        indices: Sequence[int],
        mode: str,
        partial: float = 0.0,
    ) -> list[float]:
        qs = [questions[i] for i in indices]
        cs = [completions[i] for i in indices]
        if mode == "likelihood":
            return self.likelihoods(qs, cs)
        own = self.greedy_answers(qs)
        return [
            0.0 if a is None else answer_credit(extract_answer(c), a, partial) for a, c in zip(own, cs)
        ]
