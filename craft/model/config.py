"""GPTConfig: the numbers and part names that define a network (``gpt.py`` builds it).

Validation collects every problem into one ``ConfigError``. Part names are checked for form here
and resolved (imported, for an import path) only where the network is built.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from craft.errors import ConfigError
from craft.model.blocks import REGISTRY


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 256
    d_model: int = 128
    n_layers: int = 6
    n_head: int = 8
    d_hid: int = 512
    dropout: float = 0.0
    bias: bool = True
    norm: str = "layernorm"  # layernorm | rmsnorm | rmsnorm_free (no scale) | a class's import path
    mlp: str = "gelu"  # gelu | swiglu (at the same parameter count) | relu2 (ReLU squared) | ...
    positions: str = "learned"  # learned | rotary | ...

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "block_size", "d_model", "n_layers", "n_head", "d_hid"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not problems and self.d_model % self.n_head:
            problems.append(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head}); "
                f"try n_head in {[h for h in range(1, self.d_model + 1) if self.d_model % h == 0 and h <= 16]}"
            )
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        for kind, known in REGISTRY.items():
            name = getattr(self, kind)
            if not isinstance(name, str) or (name not in known and "." not in name):
                problems.append(f"unknown {kind} {name!r}: use one of {sorted(known)} or a class's import path")
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))

    @classmethod
    def from_section(cls, section: dict, **fields) -> GPTConfig:
        """A config from a YAML ``model:`` section (keys that are not GPTConfig fields, such as lr,
        are ignored); ``fields`` (vocab_size, block_size, ...) override it."""
        return cls(**{**{k: v for k, v in section.items() if k in cls.__dataclass_fields__}, **fields})

    @property
    def head_size(self) -> int:
        return self.d_model // self.n_head


# Fields that fix the network's shape (all but dropout): a checkpoint and a config must agree on
# these to resume, and predict/export rebuild the network from them.
ARCHITECTURE_FIELDS = tuple(f.name for f in fields(GPTConfig) if f.name != "dropout")
