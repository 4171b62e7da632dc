"""Scenario fields of how a client group's devices score: ``reward_mode``, ``format_weight``,
``partial_credit``.

``ClientRewardFields`` is a base of :class:`fedgrpo.scenarios.schema.ClientGroup`, so these
are keys of a ``clients.groups`` entry. Every score request to a client carries its own
group's three values (:func:`fedgrpo.scenarios.mapping.client_rewards`), in sim, emulate and
live alike; the device computes the reward (:meth:`fedgrpo.edge.scorer.EdgeScorer.score`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Prob = Annotated[float, Field(ge=0.0, le=1.0)]
RewardMode = Literal["auto", "answer", "agreement", "likelihood", "format"]


class ClientRewardFields(BaseModel):
    """The reward settings of one client group."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)

    reward_mode: RewardMode = Field(
        default="auto",
        description="how this group's clients score candidates; every request to a client "
        "carries its own group's mode, in sim, emulate and live alike",
    )
    format_weight: Prob = Field(
        default=0.0, description="weight of the format reward in this group's clients' scores"
    )
    partial_credit: Prob = Field(
        default=0.0,
        description="a wrong numeric answer earns this x its closeness to the right one "
        "(1 - relative error); 0 = exact match only",
    )
