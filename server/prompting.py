"""Prompts for the server model: the plain zoo format, or a chat template with few-shot
exemplars for instruct models.

The zoo's tiny models are trained on exactly ``Q: 27+48\\nA:`` and continue with the
rationale and ``answer: N``; that is the *plain* style, and base models keep it. An instruct
model such as SmolLM2-135M-Instruct never writes ``answer: N`` after that prompt: it needs its
own chat template, a system line that states the format, and a few worked exemplars as
earlier user/assistant turns (the *chat* style). ``auto`` picks chat when the tokenizer has a
chat template, plain otherwise.

The prompt becomes part of each item the trainer sees (:func:`prompted_suite`), so rollout,
evaluation and the sample-accuracy record all use the same text without the trainer knowing
about styles. Exemplars come from the suite's labelled auxiliary pool (held out from test and
train by construction), one domain after another, drawn with a seeded generator.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from fedgrpo.edge.answer_format import make_completion, make_prompt
from fedgrpo.errors import ConfigError
from fedgrpo.server.tasks import TaskItem, TaskSuite
from fedgrpo.server.tasks.suite import DomainSplits

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PromptStyle = Literal["auto", "plain", "chat"]
ExemplarChoice = Literal["domain", "mixed"]
RationaleStyle = Literal["equation", "worked"]
RATIONALES: tuple[str, ...] = ("equation", "worked")
STYLES: tuple[str, ...] = ("auto", "plain", "chat")
EXEMPLAR_CHOICES: tuple[str, ...] = ("domain", "mixed")
DEFAULT_SYSTEM = (
    "You solve small arithmetic and digit problems. Reply with the working on one line, "
    "then a last line 'answer: N' with the final number."
)


@dataclass(frozen=True)
class PromptConfig:
    """How questions are put to the server model (``server.prompt`` in a scenario)."""

    style: PromptStyle = "auto"
    shots: int = 3  # few-shot exemplars (chat style only)
    # domain: the exemplars share the question's task family (what its operator shows);
    # mixed: the same exemplars, round-robin over the domains, for every question
    exemplars: ExemplarChoice = "domain"
    # how the exemplars' rationale line reads: equation `27+48 = 75` (what a 135M chat model
    # imitates reliably) or the zoo's worked digits `7+8=15,2+4+1=7` (measured: SmolLM2 then
    # rarely gets an answer right; benchmarks/results/real_model_prompting.md)
    rationale: RationaleStyle = "equation"
    system: str | None = DEFAULT_SYSTEM  # chat style's system message; None = the template's
    seed: int = 0  # which auxiliary items become exemplars

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ConfigError(f"prompt style {self.style!r} is unknown; use one of {STYLES}")
        if self.exemplars not in EXEMPLAR_CHOICES:
            raise ConfigError(
                f"prompt exemplars {self.exemplars!r} is unknown; use one of {EXEMPLAR_CHOICES}"
            )
        if self.rationale not in RATIONALES:
            raise ConfigError(
                f"prompt rationale {self.rationale!r} is unknown; use one of {RATIONALES}"
            )
        if self.shots < 0:
            raise ConfigError(f"prompt shots must be >= 0, got {self.shots}")


@dataclass(frozen=True)
class PromptedItem(TaskItem):
    """A task item carrying the exact prompt text the server model is given."""

    prompt_text: str = field(default="", compare=False)

    @property
    def prompt(self) -> str:
        return self.prompt_text


def uses_chat(tokenizer: PreTrainedTokenizerBase, style: str) -> bool:
    """Whether ``style`` means the chat template for this tokenizer (``auto``: if it has one)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if style == "chat" and not has_template:
        raise ConfigError(
            "server.prompt.style is 'chat' but the server model's tokenizer has no chat "
            "template; use style 'plain' (or 'auto') for base models"
        )
    return style == "chat" or (style == "auto" and has_template)


def pick_exemplars(
    suite: TaskSuite, shots: int, seed: int = 0, domains: Sequence[str] | None = None
) -> list[TaskItem]:
    """``shots`` labelled items from the auxiliary pool, round-robin over ``domains`` (default:
    the suite's)."""
    names = tuple(domains or suite.domains)
    rng = random.Random(f"prompt-exemplars:{seed}")
    pools = {d: rng.sample(suite.aux_pool(d), len(suite.aux_pool(d))) for d in names}
    picked: list[TaskItem] = []
    k = 0
    while len(picked) < shots:
        domain = names[k % len(names)]
        depth = k // len(names)
        if depth >= len(pools[domain]):
            raise ConfigError(f"server.prompt.shots={shots} is more than the auxiliary pool holds")
        picked.append(pools[domain][depth])
        k += 1
    return picked


def exemplar_reply(item: TaskItem, rationale: str = "equation") -> str:
    """The assistant turn of an exemplar: a rationale line, then ``answer: N``."""
    line = f"{item.question} = {item.answer}" if rationale == "equation" else item.rationale
    return make_completion(line, item.answer).strip()


def chat_messages(
    question: str,
    exemplars: Sequence[TaskItem],
    system: str | None,
    rationale: str = "equation",
) -> list[dict[str, str]]:
    """System line, one user/assistant turn per exemplar, then the question."""
    messages = [{"role": "system", "content": system}] if system else []
    for ex in exemplars:
        messages.append({"role": "user", "content": make_prompt(ex.question)[: -len("\nA:")]})
        messages.append({"role": "assistant", "content": exemplar_reply(ex, rationale)})
    messages.append({"role": "user", "content": make_prompt(question)[: -len("\nA:")]})
    return messages


class PromptFormatter:
    """Question -> prompt text for one tokenizer and :class:`PromptConfig`."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, config: PromptConfig, suite: TaskSuite
    ) -> None:
        self.tokenizer, self.config = tokenizer, config
        self.chat = uses_chat(tokenizer, config.style)
        self.exemplars: dict[str | None, list[TaskItem]] = {}
        if self.chat and config.exemplars == "mixed":
            self.exemplars[None] = pick_exemplars(suite, config.shots, config.seed)
        elif self.chat:
            for d in suite.domains:
                self.exemplars[d] = pick_exemplars(suite, config.shots, config.seed, [d])

    def __call__(self, question: str, domain: str | None = None) -> str:
        """The prompt for ``question`` (of ``domain``, which the ``domain`` choice needs)."""
        if not self.chat:
            return make_prompt(question)
        key = None if self.config.exemplars == "mixed" else domain
        if key not in self.exemplars:
            raise ConfigError(
                f"no prompt exemplars for domain {domain!r}; known: {sorted(map(str, self.exemplars))}"
            )
        cfg = self.config
        messages = chat_messages(question, self.exemplars[key], cfg.system, cfg.rationale)
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return str(text)


def prompted_suite(suite: TaskSuite, formatter: PromptFormatter) -> TaskSuite:
    """The same suite whose items carry ``formatter``'s prompts (plain style: unchanged)."""
    if not formatter.chat:
        return suite

    def wrap(items: tuple[TaskItem, ...]) -> tuple[TaskItem, ...]:
        return tuple(
            PromptedItem(i.domain, i.question, i.rationale, i.answer, formatter(i.question, i.domain))
            for i in items
        )

    splits = {
        name: DomainSplits(train=wrap(s.train), test=wrap(s.test), aux_pool=wrap(s.aux_pool))
        for name, s in suite.splits.items()
    }
    return replace(suite, splits=splits)
