"""The one sampling config: how the next token is picked, how many, and where generation stops.

Every place that generates reads it: ``LanguageModel`` (``--model.sampling.*``, used by ``predict``
and ``generate``), the sample callback (``--samples.sampling.*``), the export manifest, the
torch-free runtime (``craft run``, which takes its defaults from the manifest), the web page and
``compare``'s samples. It is validated here, once, whoever builds it.

The rule every sampler follows (torch in ``craft/generate/sampling.py``, numpy in
``craft/runtime.py``, ONNX nodes in ``craft/export/web.py`` for the page), so that one uniform draw
picks the same token everywhere: temperature below ``GREEDY_BELOW`` is greedy (the first largest
logit); otherwise the logits minus their maximum over the temperature, the ``top_k`` largest kept,
then the smallest set (largest first) holding ``top_p`` of the mass; the kept tokens, largest first
(ties: lower id first), get their softmax; the token is the first whose cumulative probability
exceeds the uniform ``u`` in [0, 1) (the last with a probability above 0 if rounding leaves none).

This file imports nothing outside the standard library (and ``craft.errors`` where craft is
installed): ``craft export`` copies it beside ``run.py`` as ``craft_sampling.py``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

try:
    from craft.errors import ConfigError as _Invalid
except ImportError:  # the copy inside an exported folder, without craft
    _Invalid = ValueError

# Below this a float32 division underflows to 0/0; such temperatures are greedy in all but name.
GREEDY_BELOW = 1e-6


class SamplingError(_Invalid):
    """Sampling settings that cannot be used (a ``ConfigError`` where craft is installed)."""


@dataclass(frozen=True)
class SamplingConfig:
    """How tokens are drawn, and how many.

    Args:
        temperature: Sampling temperature; 0 is greedy (the most likely token each step).
        top_k: Sample only among the k most likely tokens (null: no limit).
        top_p: Nucleus sampling: the smallest set of likely tokens holding this much probability.
        max_new_tokens: Tokens to generate per prompt.
        seed: Seed of the sampling generator (training's random stream is untouched). Each engine
            has its own generator (torch, numpy, the page's), so a seed repeats within one engine.
        stop: Stop a prompt's generation at the first of these strings; the text ends before it.
    """

    temperature: float = 0.8
    top_k: int | None = 200
    top_p: float = 1.0
    max_new_tokens: int = 200
    seed: int = 1337
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.stop, (list, str)):  # from YAML or JSON; a lone string is one stop string
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        problems = self.problems()
        if problems:
            raise SamplingError("invalid sampling settings: " + "; ".join(problems))

    def problems(self) -> list[str]:
        found = []

        def number(name: str, value: Any, integer: bool = False) -> bool:
            kind = int if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind):
                found.append(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
                return False
            if not integer and not math.isfinite(value):
                found.append(f"{name} must be a finite number, got {value}")
                return False
            return True

        if number("temperature", self.temperature) and self.temperature < 0:
            found.append(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if self.top_k is not None and number("top_k", self.top_k, integer=True) and self.top_k < 1:
            found.append(f"top_k must be >= 1 or null, got {self.top_k}")
        if number("top_p", self.top_p) and not 0.0 < self.top_p <= 1.0:
            found.append(f"top_p must be in (0, 1], got {self.top_p}")
        if number("max_new_tokens", self.max_new_tokens, integer=True) and self.max_new_tokens < 0:
            found.append(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if number("seed", self.seed, integer=True) and not 0 <= self.seed < 2**63:
            found.append(f"seed must be in [0, 2**63), got {self.seed}")
        if not all(isinstance(s, str) and s for s in self.stop):
            found.append(f"stop must be a list of non-empty strings, got {list(self.stop)!r}")
        return found

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    def with_(self, **changes: Any) -> SamplingConfig:
        """A copy with the settings that are not None changed (and validated)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def for_vocab(self, vocab_size: int) -> SamplingConfig:
        """``top_k`` clamped to the vocabulary: a ``top_k`` at or above it keeps every token, so the
        default (200, for BPE vocabularies) means "no limit" for a char model, without a warning."""
        return replace(self, top_k=vocab_size) if self.top_k is not None and self.top_k > vocab_size else self

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (``stop`` as a list): for checkpoints, manifests and records."""
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def of(cls, value: SamplingConfig | dict[str, Any] | None) -> SamplingConfig:
        """From a config, a saved dict (checkpoint, manifest; unknown keys refused), or None (defaults)."""
        if value is None or isinstance(value, cls):
            return value or cls()
        if not isinstance(value, dict):
            raise SamplingError(f"sampling settings must be a mapping, got {value!r}")
        unknown = sorted(set(value) - {f.name for f in fields(cls)})
        if unknown:
            raise SamplingError(f"unknown sampling settings {unknown}; known: {[f.name for f in fields(cls)]}")
        return cls(**value)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first stop string in it, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)
