"""A causal LM behind an onnxruntime session: batched full-sequence logits and greedy decoding.

The exported graph has no KV cache (``input_ids``, ``attention_mask`` and, for most
families, ``position_ids`` in; full-sequence ``logits`` out). Scoring needs exactly that:
one forward pass per batch. Greedy decoding — needed only for the ``agreement`` reward and
competence answers, and cached per question — re-runs the whole sequence once per new token.
That is O(n²) in length but fine for the short answers and small models an edge device holds,
and it keeps one graph (one file to quantise, copy and verify) instead of two.

A graph with *dynamic* activation quantisation (int8) computes each activation scale over the
whole input tensor, which would make a row's logits depend on the rows batched with it; such
a graph is run ``row_by_row`` (one unpadded row per session run), so a reward never depends
on its neighbours in the request.

Batches are right-padded: every real token sits at positions 0..len-1 exactly as in an
unpadded run, pad positions are masked out and never read, so no row ever sees an all-masked
attention pattern (left padding can make exported attention produce NaNs on pad rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

_ORT_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OnnxGraphError(ValueError):
    """The ONNX file is not a scoring graph this runtime understands."""


class OnnxCausalLM:
    """Run an exported causal LM. Thread-safe: onnxruntime sessions allow concurrent ``run``."""

    def __init__(
        self,
        path: Path,
        pad_token_id: int,
        max_length: int,
        threads: int | None = None,
        forward_batch: int = 32,
        row_by_row: bool = False,
    ) -> None:
        options = ort.SessionOptions()
        if threads is not None and threads > 0:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if "input_ids" not in inputs or "logits" not in outputs:
            raise OnnxGraphError(
                f"{path} has inputs {sorted(inputs)} and outputs {outputs}; expected input_ids "
                "in and logits out (export with 'fedgrpo-edge export')"
            )
        unsupported = sorted(set(inputs) - {"input_ids", "attention_mask", "position_ids"})
        if unsupported:
            raise OnnxGraphError(
                f"{path} takes inputs {unsupported}; a with-past (KV cache) graph is not "
                "supported, export the plain text-generation graph"
            )
        self.input_names = tuple(inputs)
        self._dtypes = {
            name: _ORT_INT_TYPES.get(inputs[name].type, np.int64) for name in self.input_names
        }
        self.pad_token_id = pad_token_id
        self.max_length = max_length
        self.forward_batch = max(1, forward_batch)
        self.row_by_row = row_by_row

    def _feed(self, rows: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "position_ids" in self.input_names:
            feed["position_ids"] = np.broadcast_to(
                np.arange(width, dtype=np.int64), (len(rows), width)
            ).copy()
        return {
            k: v.astype(self._dtypes[k], copy=False) for k, v in feed.items() if k in self._dtypes
        }

    def logits(self, rows: Sequence[Sequence[int]]) -> np.ndarray:
        """Logits ``[len(rows), max_len, vocab]`` for right-padded ``rows`` (one pass)."""
        if not rows or any(len(r) == 0 for r in rows):
            raise ValueError("every row needs at least one token")
        if any(len(r) > self.max_length for r in rows):
            raise ValueError(f"a row is longer than the model's {self.max_length} positions")
        if not self.row_by_row or len(rows) == 1:
            (out,) = self.session.run(["logits"], self._feed(rows))
            return np.asarray(out)
        # Dynamic activation quantisation takes its scale over the whole input tensor, so a
        # row's logits would depend on the other rows (and on their padding): run each alone.
        parts = [np.asarray(self.session.run(["logits"], self._feed([row]))[0]) for row in rows]
        width = max(len(r) for r in rows)
        batch = np.zeros((len(rows), width, parts[0].shape[-1]), dtype=parts[0].dtype)
        for i, part in enumerate(parts):
            batch[i, : part.shape[1]] = part[0]
        return batch

    def gather_logprobs(
        self, rows: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """For each row, log p(row[t] | row[:t]) at every position t in ``targets[row]``.

        Batches are split into chunks of ``forward_batch`` rows so peak memory stays bounded
        (logits are rows × length × vocab floats; a 49k vocabulary makes that large).
        """
        result: list[np.ndarray] = []
        for start in range(0, len(rows), self.forward_batch):
            chunk = rows[start : start + self.forward_batch]
            logits = self.logits(chunk)
            for i, row in enumerate(chunk):
                positions = np.asarray(targets[start + i], dtype=np.int64)
                if positions.size == 0:
                    result.append(np.zeros(0, dtype=np.float64))
                    continue
                if positions.min() < 1 or positions.max() >= len(row):
                    raise ValueError("target positions must be in 1..len(row)-1")
                picked = logits[i, positions - 1, :].astype(np.float64)
                peak = picked.max(axis=-1, keepdims=True)
                log_norm = peak[:, 0] + np.log(np.exp(picked - peak).sum(axis=-1))
                token_ids = np.asarray(row, dtype=np.int64)[positions]
                result.append(picked[np.arange(len(positions)), token_ids] - log_norm)
        return result

    def greedy(
        self, prompts: Sequence[Sequence[int]], max_new_tokens: int, eos_token_id: int | None
    ) -> list[list[int]]:
        """Greedy continuation of each prompt (EOS excluded), by repeated full forward passes.

        A row stops at EOS, after ``max_new_tokens`` or when it fills the context window.
        Prompts longer than the window keep their last ``max_length - 1`` tokens.
        """
        sequences = [list(p)[-(self.max_length - 1) :] for p in prompts]
        generated: list[list[int]] = [[] for _ in prompts]
        active = [i for i, s in enumerate(sequences) if s and max_new_tokens > 0]
        while active:
            still: list[int] = []
            for start in range(0, len(active), self.forward_batch):
                chunk = active[start : start + self.forward_batch]
                rows = [sequences[i] for i in chunk]
                logits = self.logits(rows)
                for j, i in enumerate(chunk):
                    token = int(np.argmax(logits[j, len(rows[j]) - 1]))
                    if eos_token_id is not None and token == eos_token_id:
                        continue
                    sequences[i].append(token)
                    generated[i].append(token)
                    if len(generated[i]) < max_new_tokens and len(sequences[i]) < self.max_length:
                        still.append(i)
            active = still
        return generated
