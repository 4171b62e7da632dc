"""A stock Open Inference Protocol client (tritonclient.http) works against a device unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
from edge_reference import TinyBuild

from fedgrpo.edge.scorer import EdgeScorer, ScorerConfig
from fedgrpo.edge.service import start_server
from fedgrpo.edge.service_config import ServiceConfig

httpclient = pytest.importorskip("tritonclient.http")
utils = pytest.importorskip("tritonclient.utils")
pytest_plugins = ["edge_fixtures"]
NAME = "expert-add"
TOKEN = "tok-123"


@pytest.fixture
async def url(gpt2_build: TinyBuild) -> AsyncIterator[str]:
    scorer = EdgeScorer.load(gpt2_build.export_dir, ScorerConfig(variant="int8", threads=1))
    config = ServiceConfig(model_name=NAME, token=TOKEN, max_concurrency=2)
    runner, port = await start_server(scorer, config, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _client_session(url: str, build: TinyBuild, binary: bool) -> dict[str, object]:
    """Everything a v2 client does, synchronously (tritonclient is blocking)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    client = httpclient.InferenceServerClient(url=url)
    try:
        found: dict[str, object] = {
            "live": client.is_server_live(),
            "ready": client.is_server_ready(),
            "model_ready": client.is_model_ready(NAME, headers=headers),
            "metadata": client.get_model_metadata(NAME, headers=headers),
        }
        items = build.other_items[:5]
        questions = np.array([i.question.encode() for i in items], dtype=np.object_)
        completions = np.array([(i.completion + " ünï").encode() for i in items], dtype=np.object_)
        inputs = [
            httpclient.InferInput("question", [5], "BYTES"),
            httpclient.InferInput("completion", [5], "BYTES"),
        ]
        inputs[0].set_data_from_numpy(questions, binary_data=binary)
        inputs[1].set_data_from_numpy(completions, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("reward", binary_data=binary)]
        result = client.infer(
            NAME,
            inputs,
            outputs=outputs,
            request_id="triton-1",
            parameters={"reward_mode": "likelihood"},
            headers=headers,
        )
        found["reward"] = result.as_numpy("reward")
        found["response"] = result.get_response()
        try:
            client.infer("other-model", inputs, outputs=outputs, headers=headers)
        except utils.InferenceServerException as exc:
            found["unknown_model_error"] = str(exc)
        try:
            client.get_model_metadata(NAME)
        except utils.InferenceServerException as exc:
            found["no_token_error"] = str(exc)
        return found
    finally:
        client.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_tritonclient_end_to_end(url: str, gpt2_build: TinyBuild, binary: bool) -> None:
    found = await asyncio.to_thread(_client_session, url, gpt2_build, binary)
    assert found["live"] is True and found["ready"] is True and found["model_ready"] is True
    meta = found["metadata"]
    assert isinstance(meta, dict) and meta["name"] == NAME and meta["platform"] == "onnxruntime"
    reward = found["reward"]
    assert isinstance(reward, np.ndarray) and reward.dtype == np.float32 and reward.shape == (5,)
    items = gpt2_build.other_items[:5]
    scorer = EdgeScorer.load(gpt2_build.export_dir, ScorerConfig(variant="int8", threads=1))
    direct = scorer.score(
        [i.question for i in items], [i.completion + " ünï" for i in items], "likelihood"
    )
    np.testing.assert_allclose(reward, direct, atol=1e-6)
    response = found["response"]
    assert isinstance(response, dict) and response["id"] == "triton-1"
    assert "unknown model" in str(found["unknown_model_error"])
    assert "token" in str(found["no_token_error"])
