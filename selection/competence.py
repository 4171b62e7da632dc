"""K × N competence matrix (clients × auxiliary exemplars), NaN = not measured yet."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from fedgrpo.errors import ConfigError


class CompetenceMatrix:
    """Right/wrong (or a score in [0, 1]) of each client on each auxiliary exemplar.

    Rows follow ``client_ids``; ``values`` is the [K, N] float array the selectors read.
    ``measured_at`` remembers the round each client was last measured (None = never).
    """

    def __init__(self, num_exemplars: int, client_ids: Sequence[str] = ()) -> None:
        if num_exemplars <= 0:
            raise ConfigError(f"num_exemplars={num_exemplars}; allowed >= 1")
        self.num_exemplars = num_exemplars
        self.client_ids: list[str] = []
        self.values = np.full((0, num_exemplars), np.nan)
        self.measured_at: dict[str, int | None] = {}
        for cid in client_ids:
            self.add_client(cid)

    @property
    def num_clients(self) -> int:
        return len(self.client_ids)

    def index(self, client: str) -> int:
        try:
            return self.client_ids.index(client)
        except ValueError:
            raise ConfigError(f"unknown client {client!r}; known: {self.client_ids}") from None

    def add_client(self, client: str) -> int:
        """Append an unmeasured client (all NaN) and return its row."""
        if client in self.client_ids:
            raise ConfigError(f"client {client!r} is already in the competence matrix")
        self.client_ids.append(client)
        self.values = np.vstack([self.values, np.full((1, self.num_exemplars), np.nan)])
        self.measured_at[client] = None
        return len(self.client_ids) - 1

    def remove_client(self, client: str) -> None:
        """Drop a client's row; later rows shift up by one."""
        row = self.index(client)
        del self.client_ids[row]
        self.values = np.delete(self.values, row, axis=0)
        del self.measured_at[client]

    def reset_client(self, client: str) -> None:
        """Forget a client's measurements (it changed model)."""
        self.values[self.index(client)] = np.nan
        self.measured_at[client] = None

    def update(
        self,
        client: str,
        exemplar_indices: Sequence[int],
        bits: Sequence[float],
        round: int | None = None,
    ) -> None:
        """Store the client's results on some exemplars (NaN entries stay unknown)."""
        idx = np.asarray(exemplar_indices, dtype=np.int64)
        vals = np.asarray(bits, dtype=np.float64)
        if idx.shape != vals.shape:
            raise ConfigError(f"{len(idx)} exemplar indices but {len(vals)} results")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_exemplars):
            raise ConfigError(f"exemplar index out of range; allowed 0..{self.num_exemplars - 1}")
        finite = vals[~np.isnan(vals)]
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            raise ConfigError("competence results must lie in [0, 1] (or NaN for unknown)")
        self.values[self.index(client), idx] = vals
        if round is not None:
            self.measured_at[client] = round

    def needs_refresh(self, round: int, every_n: int = 0) -> list[str]:
        """Clients never measured, plus (every_n > 0) those last measured ≥ every_n rounds ago."""
        out = []
        for cid in self.client_ids:
            last = self.measured_at[cid]
            if last is None or (every_n > 0 and round - last >= every_n):
                out.append(cid)
        return out

    def to_json(self) -> str:
        rows = [[None if math.isnan(v) else float(v) for v in row] for row in self.values]
        return json.dumps(
            {
                "num_exemplars": self.num_exemplars,
                "client_ids": self.client_ids,
                "values": rows,
                "measured_at": self.measured_at,
            }
        )

    def restore(self, other: CompetenceMatrix) -> None:
        """Take ``other``'s contents in place, so selectors holding this object see them
        (a resumed run restores the checkpoint's matrix into the one its selector reads)."""
        self.num_exemplars = other.num_exemplars
        self.client_ids = list(other.client_ids)
        self.values = other.values.copy()
        self.measured_at = dict(other.measured_at)

    @classmethod
    def from_json(cls, text: str) -> CompetenceMatrix:
        data = json.loads(text)
        out = cls(int(data["num_exemplars"]), data["client_ids"])
        if out.num_clients:
            out.values = np.array(
                [[np.nan if v is None else v for v in row] for row in data["values"]],
                dtype=np.float64,
            )
        out.measured_at = {cid: data["measured_at"].get(cid) for cid in out.client_ids}
        return out
