"""The edge wire protocol: Open Inference Protocol (KServe v2) JSON, reward-only.

Pure Python (stdlib only). The server, the simulator and the edge service all encode and
decode through this module, so there is exactly one definition of what crosses the wire.

Score request (``POST /v2/models/{name}/infer``)::

    {"id": "r-17",
     "parameters": {"task": "score", "reward_mode": "auto", "format_weight": 0.0,
                    "partial_credit": 0.0},
     "inputs": [
       {"name": "question",   "datatype": "BYTES", "shape": [n], "data": ["27+48", ...]},
       {"name": "completion", "datatype": "BYTES", "shape": [n], "data": [" 7+8=15,...", ...]}],
     "outputs": [{"name": "reward"}]}

Competence request: ``"task": "competence"``, inputs ``question`` and ``reference_answer``,
output ``correct`` (1.0 / 0.0 per exemplar). Response::

    {"model_name": "expert-add", "model_version": "1", "id": "r-17",
     "outputs": [{"name": "reward", "datatype": "FP32", "shape": [n], "data": [1.0, 0.0, ...]}]}

Only those scalars ever leave a device.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = "2"
REWARD_MODES = ("auto", "answer", "agreement", "likelihood", "format")
TASKS = ("score", "competence")
SCORE_INPUTS = ("question", "completion")
SCORE_PARAMETERS = ("task", "reward_mode", "format_weight", "partial_credit")
COMPETENCE_INPUTS = ("question", "reference_answer")
REWARD_OUTPUT = "reward"
COMPETENCE_OUTPUT = "correct"
DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_STRING_CHARS = 4096


class ProtocolError(ValueError):
    """A request or response that does not follow the protocol.

    ``status`` is the HTTP status a server should answer with (400, 404, 413, 422...).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ScoreRequest:
    """Score ``len(questions)`` candidate policies (question, completion) with one scalar each."""

    request_id: str
    questions: tuple[str, ...]
    completions: tuple[str, ...]
    reward_mode: str = "auto"
    format_weight: float = 0.0
    extra_parameters: dict[str, Any] = field(default_factory=dict)
    partial_credit: float = 0.0

    def __post_init__(self) -> None:
        _check_pairs(self.questions, self.completions, "completion")
        if self.reward_mode not in REWARD_MODES:
            raise ProtocolError(
                f"reward_mode {self.reward_mode!r} is not supported; use one of {', '.join(REWARD_MODES)}",
                422,
            )
        for name in ("format_weight", "partial_credit"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ProtocolError(f"{name} must be a number in [0, 1], got {value!r}", 422)

    def __len__(self) -> int:
        return len(self.questions)


@dataclass(frozen=True)
class CompetenceRequest:
    """Answer auxiliary exemplars; the device returns only right/wrong bits."""

    request_id: str
    questions: tuple[str, ...]
    reference_answers: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_pairs(self.questions, self.reference_answers, "reference_answer")

    def __len__(self) -> int:
        return len(self.questions)


InferRequest = ScoreRequest | CompetenceRequest


@dataclass(frozen=True)
class RewardResponse:
    """One float per item of the request, in request order, with the request id echoed."""

    request_id: str
    model_name: str
    values: tuple[float, ...]
    output_name: str = REWARD_OUTPUT
    model_version: str = "1"

    def __len__(self) -> int:
        return len(self.values)


def _check_pairs(questions: tuple[str, ...], others: tuple[str, ...], other_name: str) -> None:
    if len(questions) != len(others):
        raise ProtocolError(
            f"input 'question' has {len(questions)} items but '{other_name}' has {len(others)}; "
            "send one per candidate",
            422,
        )


# --------------------------------------------------------------------------- encoding


def _bytes_tensor(name: str, values: tuple[str, ...]) -> dict[str, Any]:
    return {"name": name, "datatype": "BYTES", "shape": [len(values)], "data": list(values)}


def encode_request(request: InferRequest) -> dict[str, Any]:
    """The OIP v2 JSON body for ``request``."""
    if isinstance(request, ScoreRequest):
        parameters: dict[str, Any] = {
            **request.extra_parameters,
            "task": "score",
            "reward_mode": request.reward_mode,
            "format_weight": request.format_weight,
            "partial_credit": request.partial_credit,
        }
        inputs = [
            _bytes_tensor("question", request.questions),
            _bytes_tensor("completion", request.completions),
        ]
        output = REWARD_OUTPUT
    else:
        parameters = {"task": "competence"}
        inputs = [
            _bytes_tensor("question", request.questions),
            _bytes_tensor("reference_answer", request.reference_answers),
        ]
        output = COMPETENCE_OUTPUT
    return {
        "id": request.request_id,
        "parameters": parameters,
        "inputs": inputs,
        "outputs": [{"name": output}],
    }


def encode_response(response: RewardResponse) -> dict[str, Any]:
    """The OIP v2 JSON body for ``response`` (FP32 output)."""
    return {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.request_id,
        "outputs": [
            {
                "name": response.output_name,
                "datatype": "FP32",
                "shape": [len(response.values)],
                "data": [float(v) for v in response.values],
            }
        ],
    }


def dumps(body: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the bytes actually sent (used for communication accounting)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------- decoding


def _bytes_input(
    tensor: Any, index: int, max_batch: int, max_string_chars: int
) -> tuple[str, tuple[str, ...]]:
    where = f"inputs[{index}]"
    if not isinstance(tensor, dict):
        raise ProtocolError(f"{where} must be an object with name, datatype, shape and data")
    name = tensor.get("name")
    if not isinstance(name, str):
        raise ProtocolError(f"{where}.name must be a string")
    if tensor.get("datatype") != "BYTES":
        raise ProtocolError(
            f"input {name!r} must have datatype 'BYTES', got {tensor.get('datatype')!r}", 422
        )
    data = tensor.get("data")
    shape = tensor.get("shape")
    if not isinstance(data, list):
        raise ProtocolError(f"input {name!r}: data must be a list of strings")
    if (
        not isinstance(shape, list)
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
        or math.prod(shape) != len(data)
        or (len(shape) > 1 and any(s != 1 for s in shape[1:]))
    ):
        raise ProtocolError(
            f"input {name!r}: shape {shape!r} does not match {len(data)} data items; "
            "use shape [n] (or [n, 1])",
            422,
        )
    if len(data) > max_batch:
        raise ProtocolError(
            f"input {name!r} has {len(data)} items; this server accepts at most {max_batch} per request",
            413,
        )
    values: list[str] = []
    for j, value in enumerate(data):
        if not isinstance(value, str):
            raise ProtocolError(
                f"input {name!r}: data[{j}] must be a string, got {type(value).__name__}", 422
            )
        if len(value) > max_string_chars:
            raise ProtocolError(
                f"input {name!r}: data[{j}] has {len(value)} characters; the limit is {max_string_chars}",
                413,
            )
        values.append(value)
    return name, tuple(values)


def _request_id(body: dict[str, Any]) -> str:
    request_id = body.get("id", "")
    if not isinstance(request_id, str):
        raise ProtocolError(f"'id' must be a string, got {type(request_id).__name__}")
    try:
        request_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(
            "'id' contains an unpaired surrogate (e.g. \\ud800), which is not valid Unicode; "
            "send a UTF-8 string"
        ) from None
    return request_id


def _unit_parameter(name: str, weight: Any) -> float:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ProtocolError(f"parameters.{name} must be a number, got {weight!r}", 422)
    try:
        return float(weight)
    except OverflowError:
        raise ProtocolError(
            f"parameters.{name} must be a number in [0, 1], got an integer of "
            f"{int(weight).bit_length()} bits (too large for a float)",
            422,
        ) from None


def parse_request(
    body: Any,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_string_chars: int = DEFAULT_MAX_STRING_CHARS,
) -> InferRequest:
    """Validate a decoded JSON body and build the request; :class:`ProtocolError` otherwise."""
    if not isinstance(body, dict):
        raise ProtocolError("request body must be a JSON object")
    request_id = _request_id(body)
    parameters = body.get("parameters", {}) or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object")
    task = parameters.get("task", "score")
    if task not in TASKS:
        raise ProtocolError(
            f"parameters.task {task!r} is not supported; use one of {', '.join(TASKS)}", 422
        )
    raw_inputs = body.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    inputs: dict[str, tuple[str, ...]] = {}
    for i, tensor in enumerate(raw_inputs):
        name, values = _bytes_input(tensor, i, max_batch, max_string_chars)
        if name in inputs:
            raise ProtocolError(f"input {name!r} appears twice")
        inputs[name] = values
    expected = SCORE_INPUTS if task == "score" else COMPETENCE_INPUTS
    missing = [n for n in expected if n not in inputs]
    unknown = [n for n in inputs if n not in expected]
    if missing or unknown:
        raise ProtocolError(
            f"task {task!r} needs inputs {list(expected)}; missing {missing}, unexpected {unknown}",
            422,
        )
    if len(inputs[expected[0]]) == 0:
        raise ProtocolError("empty batch: send at least one item", 422)
    if task == "competence":
        return CompetenceRequest(request_id, inputs["question"], inputs["reference_answer"])
    mode = parameters.get("reward_mode", "auto")
    weight_value = _unit_parameter("format_weight", parameters.get("format_weight", 0.0))
    partial = _unit_parameter("partial_credit", parameters.get("partial_credit", 0.0))
    extra = {k: v for k, v in parameters.items() if k not in SCORE_PARAMETERS}
    return ScoreRequest(
        request_id, inputs["question"], inputs["completion"], str(mode), weight_value, extra, partial
    )


def parse_response(body: Any, expected_len: int, expected_id: str | None = None) -> RewardResponse:
    """Validate a device's answer. Wrong length, NaN/inf, a wrong id or shape raise
    :class:`ProtocolError` — the caller treats that as a failed request, never trusts it."""
    if not isinstance(body, dict):
        raise ProtocolError("response body must be a JSON object")
    outputs = body.get("outputs")
    if not isinstance(outputs, list) or len(outputs) != 1 or not isinstance(outputs[0], dict):
        raise ProtocolError("response must carry exactly one output tensor")
    out = outputs[0]
    name = out.get("name")
    if name not in (REWARD_OUTPUT, COMPETENCE_OUTPUT):
        raise ProtocolError(f"unexpected output name {name!r}")
    data = out.get("data")
    if not isinstance(data, list) or len(data) != expected_len:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise ProtocolError(f"expected {expected_len} values in output {name!r}, got {got}")
    values: list[float] = []
    for j, v in enumerate(data):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ProtocolError(f"output {name!r}[{j}] = {v!r} is not a finite number")
        values.append(float(v))
    response_id = body.get("id", "")
    if expected_id is not None and response_id != expected_id:
        raise ProtocolError(f"response id {response_id!r} does not echo request id {expected_id!r}")
    return RewardResponse(
        request_id=str(response_id),
        model_name=str(body.get("model_name", "")),
        values=tuple(values),
        output_name=str(name),
        model_version=str(body.get("model_version", "1")),
    )
