"""Scenario keys for Byzantine clients, private rewards and trust-weighted aggregation, and
their mapping onto the runtime objects.

* ``clients.groups[i].behaviour``: ``{kind, fraction, target, strength}`` — ``fraction`` of
  the group's clients (rounded, chosen by a seeded draw) behave as ``kind``
  (:mod:`fedgrpo.edge.behaviour`); the others are honest.
* ``clients.groups[i].privacy``: ``{mechanism, epsilon, delta, budget}`` — local DP applied by
  each of the group's devices (:mod:`fedgrpo.edge.privacy`).
* ``server.trust``: ``{decay, exclude_below, flip_below, probe_items}`` for
  ``server.grpo.reward_combine: trust`` (:mod:`fedgrpo.server.grpo.trust`).

Sim runs the devices' behaviour and privacy in process (``sim/rewards.py``); emulate passes
them to each edge process as ``fedgrpo-edge serve`` flags (:func:`edge_flags`); a live device
is started with those flags by its owner, and the scenario's privacy settings tell the server
how to debias its rewards.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from fedgrpo.edge.behaviour import Behaviour
    from fedgrpo.edge.device_rewards import DeviceRewards
    from fedgrpo.edge.privacy import PrivacySpec
    from fedgrpo.scenarios.schema import ClientEntry, Scenario
    from fedgrpo.server.grpo.trust import RoundAggregator

__all__ = [
    "SCHEMA_ONLY",
    "BehaviourSection",
    "PrivacySection",
    "TrustSection",
    "check_byzantine_guidance",
    "client_behaviours",
    "client_privacy",
    "device_rewards",
    "edge_flags",
    "make_aggregator",
    "reward_range",
    "run_outputs",
]

log = logging.getLogger(__name__)
Prob = Annotated[float, Field(ge=0.0, le=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)


class BehaviourSection(_Section):
    kind: Literal[
        "honest", "random", "inverted", "always_approve", "colluding", "small_shift"
    ] = "honest"
    # share of the group's clients that behave so (round(fraction · count), seeded choice)
    fraction: Prob = 1.0
    # colluding: regex on the question text (e.g. '\+' = the add domain)
    target: str | None = None
    # small_shift: probability of inverting a reward
    strength: Prob = 0.2

    @model_validator(mode="after")
    def _valid(self) -> BehaviourSection:
        from fedgrpo.edge.behaviour import Behaviour

        try:
            Behaviour(self.kind, self.target, self.strength)
        except ValueError as exc:
            raise ValueError(f"{exc} (set behaviour.target, e.g. target: '\\+')") from None
        return self


class PrivacySection(_Section):
    mechanism: Literal["none", "randomised_response", "laplace", "gaussian"] = "none"
    epsilon: Annotated[float, Field(gt=0.0)] = 1.0  # per released reward
    delta: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-5
    # total epsilon a device spends (at delta) before it refuses; null = unlimited
    budget: Annotated[float, Field(gt=0.0)] | None = None


class TrustSection(_Section):
    decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.7
    exclude_below: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    # a client whose probe score is below this has its rewards read as 1 - r (0 = never)
    flip_below: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.2
    # reward-probe pairs per client at each competence refresh (0 = no probe)
    probe_items: Annotated[int, Field(ge=0, le=256)] = 8


# --------------------------------------------------------------------------- mapping


def client_behaviours(s: Scenario) -> list[Behaviour]:
    """Client k's behaviour: in each group, ``round(fraction · count)`` clients picked by a
    permutation from the ``(seed, group, "behaviour")`` stream; the rest honest."""
    from fedgrpo.edge.behaviour import Behaviour
    from fedgrpo.sim.rng import stream_generator

    out: list[Behaviour] = []
    for gi, group in enumerate(s.clients.groups):
        b = group.behaviour
        n = math.floor(b.fraction * group.count + 0.5)
        chosen = set(stream_generator(s.seed, gi, "behaviour").permutation(group.count)[:n])
        lie = Behaviour(b.kind, b.target, b.strength)
        out += [lie if i in chosen else Behaviour() for i in range(group.count)]
    return out


def client_privacy(s: Scenario) -> list[PrivacySpec]:
    from fedgrpo.edge.privacy import PrivacySpec

    return [PrivacySpec(**c.group.privacy.model_dump()) for c in s.client_list()]


def device_rewards(s: Scenario) -> list[DeviceRewards]:
    """One device-side pipeline per client (the simulator's in-process devices)."""
    from fedgrpo.edge.device_rewards import DeviceRewards

    return [DeviceRewards(b, p) for b, p in zip(client_behaviours(s), client_privacy(s))]


def edge_flags(s: Scenario, client: ClientEntry) -> list[str]:
    """The ``fedgrpo-edge serve`` flags that make an emulated device behave so."""
    b = client_behaviours(s)[client.index]
    p = client.group.privacy
    flags: list[str] = []
    if not b.honest:
        flags += ["--behaviour", b.kind, "--behaviour-strength", f"{b.strength!r}"]
        flags += ["--behaviour-target", b.target] if b.target else []
    if p.mechanism != "none":
        flags += ["--privacy", p.mechanism, "--epsilon", repr(p.epsilon), "--delta", repr(p.delta)]
        flags += ["--privacy-budget", repr(p.budget)] if p.budget is not None else []
    if flags:
        flags += ["--noise-seed", str(s.seed * 100_003 + client.index)]
    return flags


def reward_range(s: Scenario) -> tuple[float, float]:
    """Rewards the server accepts: [0, 1], widened for additive-noise private clients."""
    from fedgrpo.edge.privacy import reward_range as one

    ranges = [one(p) for p in client_privacy(s)]
    return (min(lo for lo, _ in ranges), max(hi for _, hi in ranges))


def make_aggregator(s: Scenario, competence: Any) -> RoundAggregator | None:
    """The trainer's aggregator when rewards need debiasing or trust weighting (fedgrpo
    baseline only); None = the trainer's plain ``combine``."""
    from fedgrpo.server.grpo.trust import RoundAggregator, TrustConfig

    privacy = client_privacy(s)
    method = s.server.grpo.reward_combine
    if s.server.baseline != "fedgrpo" or (method != "trust" and not any(p.on for p in privacy)):
        return None
    t = s.server.trust
    return RoundAggregator(
        method,
        len(privacy),
        trim=s.server.grpo.trim,
        privacy=privacy,
        config=TrustConfig(t.decay, t.exclude_below, t.flip_below),
        competence=competence,
    )


def check_byzantine_guidance(s: Scenario) -> list[tuple[str, str]]:
    """Warn (never fail) when M experts per question cannot outvote the Byzantine clients:
    the guidance is M >= 2f + 1 with f = min(Byzantine clients, M)."""
    f = sum(not b.honest for b in client_behaviours(s))
    m = s.selection.M
    if f and m < 2 * min(f, m) + 1:
        log.warning(
            "selection.M=%d with %d Byzantine client(s): robust aggregation needs M >= 2f + 1 "
            "= %d experts per question to keep an honest majority",
            m,
            f,
            2 * min(f, m) + 1,
        )
    return []


def run_outputs(s: Scenario, trainer: Any, gatherer: Any) -> dict[str, Any]:
    """Summary entries of a run: each client's behaviour (when any lies), its final trust
    weight (``reward_combine: trust``) and its privacy spending (sim's in-process devices)."""
    out: dict[str, Any] = {}
    kinds = [b.kind for b in client_behaviours(s)]
    if any(k != "honest" for k in kinds):
        out["behaviours"] = kinds
    agg = getattr(trainer, "aggregator", None)
    if agg is not None:
        out.update({f"final_{k}": v for k, v in agg.record().items()})
    devices = getattr(gatherer, "devices", None)
    if devices and any(d.privacy.on for d in devices):
        out["privacy"] = [d.accountant.report() for d in devices]
    return out


# schema fields that feed no runtime dataclass field directly (tests/test_config_parity.py)
_G0 = "clients.groups.0"
SCHEMA_ONLY: dict[str, str] = {
    **{
        f"{_G0}.behaviour.{n}": "the client's device behaviour (behaviour_section.client_behaviours)"
        for n in BehaviourSection.model_fields
    },
    **{
        f"{_G0}.privacy.{n}": "the device's LDP and the server's debiasing (client_privacy)"
        for n in PrivacySection.model_fields
    },
}
