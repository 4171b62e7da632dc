"""fedgrpo server: the policy model, expert selection, reward gathering and the GRPO update.

Heavy dependencies (torch, transformers) are imported only by the submodules that need them,
so pure pieces (tasks, round semantics, the math on plain arrays) stay importable from the
simulator. A missing extra raises :class:`fedgrpo.errors.MissingExtraError` naming it.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
