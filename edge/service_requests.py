"""What the device's ``infer`` route does with a request before and after the model runs:
decode the (JSON or binary-extension) body, reject what no tokenizer could take, check the
requested outputs, bind the scorer call, and encode the reply (JSON or binary FP32).

No aiohttp here: every function works on bytes, dicts and the protocol's dataclasses, and
raises :class:`~fedgrpo.edge.protocol.ProtocolError` for a bad request.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

from fedgrpo.edge.binary import encode_fp32, inline_binary_inputs, split_body
from fedgrpo.edge.protocol import (
    COMPETENCE_OUTPUT,
    REWARD_OUTPUT,
    CompetenceRequest,
    ProtocolError,
    ScoreRequest,
    dumps,
)
from fedgrpo.edge.service_config import RewardModel

__all__ = [
    "binary_reply",
    "check_outputs",
    "check_unicode",
    "decode_body",
    "fp32",
    "scoring_work",
]


def fp32(value: float) -> float:
    """``value`` as an FP32 tensor holds it, as the shortest decimal that reads back to that
    float32 (``0.1``, not ``0.10000000149011612``): JSON replies carry float32 precision, and
    the JSON and binary replies hold the same numbers."""
    (single,) = struct.unpack("<f", struct.pack("<f", value))
    for digits in range(6, 10):  # 9 significant digits always round-trip a float32
        short = float(f"{single:.{digits}g}")
        if struct.pack("<f", short) == struct.pack("<f", single):
            return short
    return float(single)


def decode_body(raw: bytes, header_length: str | None) -> dict[str, Any]:
    """The request's JSON object, with binary-extension inputs inlined when there are any."""
    json_part, binary = split_body(raw, header_length)
    try:
        text = json_part.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ProtocolError("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal over sys.get_int_max_str_digits()
        raise ProtocolError(
            f"malformed JSON: a number this server cannot read ({str(exc)[:80]}); "
            "send ordinary JSON numbers"
        ) from None
    if not isinstance(body, dict):
        raise ProtocolError("request body must be a JSON object")
    if header_length is not None:
        inline_binary_inputs(body, binary)
    return body


def check_unicode(parsed: ScoreRequest | CompetenceRequest) -> None:
    """JSON ``\\ud800`` escapes decode to lone surrogates, which no tokenizer accepts."""
    named: dict[str, tuple[str, ...]] = {"question": parsed.questions}
    if isinstance(parsed, ScoreRequest):
        named["completion"] = parsed.completions
    else:
        named["reference_answer"] = parsed.reference_answers
    for name, values in named.items():
        for j, value in enumerate(values):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ProtocolError(
                    f"input {name!r}: data[{j}] contains an unpaired surrogate (not valid Unicode)"
                ) from None


def check_outputs(body: dict[str, Any], output_name: str) -> None:
    """The request may name outputs, but only the one its task produces."""
    outputs = body.get("outputs")
    if outputs is None:
        return
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise ProtocolError("'outputs' must be a list of objects with a 'name'")
    unknown = [o["name"] for o in outputs if o["name"] != output_name]
    if unknown:
        raise ProtocolError(
            f"unknown output(s) {unknown}; this task produces only {output_name!r}", 400
        )


def scoring_work(
    scorer: RewardModel, parsed: ScoreRequest | CompetenceRequest
) -> tuple[Callable[[], list[float]], str, str]:
    """The scorer call a parsed request asks for (to run in the pool), its output tensor's
    name and the task label for the metrics."""
    if isinstance(parsed, ScoreRequest):
        score_request = parsed

        def score() -> list[float]:
            return scorer.score(
                score_request.questions,
                score_request.completions,
                score_request.reward_mode,
                score_request.format_weight,
                score_request.partial_credit,
            )

        return score, REWARD_OUTPUT, "score"
    competence_request: CompetenceRequest = parsed

    def competence() -> list[float]:
        return scorer.competence(competence_request.questions, competence_request.reference_answers)

    return competence, COMPETENCE_OUTPUT, "competence"


def binary_reply(payload: dict[str, Any], values: list[float]) -> tuple[bytes, int]:
    """The binary-extension reply to an encoded JSON ``payload``: the body (JSON header, then
    the FP32 values) and the header's length. Moves the data out of ``payload``'s output."""
    output = payload["outputs"][0]
    del output["data"]
    output["parameters"] = {"binary_data_size": 4 * len(values)}
    header = dumps(payload)
    return header + encode_fp32(values), len(header)
