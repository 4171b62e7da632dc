"""Damaged checkpoints are detected, never trusted: fallback to the previous good one with a
message naming both files, or a clear error when none is good (never a torch traceback)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from fedgrpo.server.checkpoint import CheckpointError, prune, read_checkpoint, write_checkpoint
from tests.test_trainer import make_trainer, trained_state  # noqa: F401  (fixture)


def _two_checkpoints(trained_state: dict[str, Any], directory: Path) -> Any:  # noqa: F811
    trainer = make_trainer(trained_state)
    trainer.step()
    trainer.save_checkpoint(directory)  # round-00001.pt
    trainer.step()
    trainer.save_checkpoint(directory)  # round-00002.pt
    return trainer


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        for i in range(64):  # 64 flipped bytes in the middle: loads fine without a checksum
            data[len(data) // 2 + i] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 3]))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "missing":
        path.unlink()


@pytest.mark.parametrize("how", ["flip", "truncate", "empty", "missing"])
def test_damaged_latest_falls_back_to_the_previous_good_checkpoint(
    trained_state: dict[str, Any], tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    _two_checkpoints(trained_state, tmp_path)
    _damage(tmp_path / "round-00002.pt", how)
    resumed = make_trainer(trained_state)
    with caplog.at_level(logging.WARNING, logger="fedgrpo.server.checkpoint"):
        extra = resumed.load_checkpoint(tmp_path)
    assert resumed.state.round == 1 and extra["checkpoint"] == "round-00001.pt"
    if how != "missing":  # a missing file is simply not a candidate
        assert extra["checkpoint_skipped"][0].startswith("round-00002.pt: ")
        assert "round-00002.pt" in caplog.text and "round-00001.pt" in caplog.text


@pytest.mark.parametrize("how", ["flip", "truncate", "empty"])
def test_no_good_checkpoint_is_a_clear_error(
    trained_state: dict[str, Any], tmp_path: Path, how: str  # noqa: F811
) -> None:
    _two_checkpoints(trained_state, tmp_path)
    for name in ("round-00001.pt", "round-00002.pt"):
        _damage(tmp_path / name, how)
    with pytest.raises(CheckpointError, match=r"no good checkpoint in .*round-00002\.pt: .*round-00001\.pt: .*start the run afresh"):
        make_trainer(trained_state).load_checkpoint(tmp_path)


def test_broken_latest_json_is_noted_and_the_files_are_scanned(
    trained_state: dict[str, Any], tmp_path: Path  # noqa: F811
) -> None:
    _two_checkpoints(trained_state, tmp_path)
    (tmp_path / "latest.json").write_text('{"path": "round-000')
    resumed = make_trainer(trained_state)
    extra = resumed.load_checkpoint(tmp_path)
    assert resumed.state.round == 2
    assert extra["checkpoint_skipped"] == ["latest.json: unreadable (JSONDecodeError), ignored"]


def test_a_file_that_matches_its_checksum_but_does_not_unpickle_is_refused(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 1, b"not a torch file")

    def load(data: bytes) -> dict[str, Any]:
        raise EOFError("Ran out of input")

    with pytest.raises(CheckpointError, match=r"round-00001\.pt: does not load \(EOFError"):
        read_checkpoint(tmp_path, load)
    with pytest.raises(CheckpointError, match="no checkpoint files"):
        read_checkpoint(tmp_path / "nothing", load)


def test_write_leaves_no_temp_files_and_prune_keeps_the_newest(tmp_path: Path) -> None:
    for r in range(1, 5):
        write_checkpoint(tmp_path, r, f"payload {r}".encode())
    assert not list(tmp_path.glob("*.tmp"))
    prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "latest.json", "round-00003.pt", "round-00003.pt.sha256", "round-00004.pt", "round-00004.pt.sha256",
    ]  # fmt: skip
    assert json.loads((tmp_path / "latest.json").read_text())["round"] == 4
    got = read_checkpoint(tmp_path, lambda d: {"text": d.decode()})
    assert got.payload == {"text": "payload 4"} and got.skipped == []
