"""GPTConfig: the numbers and part names that define a network (``gpt.py`` builds it).

Validation collects every problem into one ``ConfigError``. Part names are checked for form here
and resolved (a built-in name looked up, an import path imported) only where the network is built
(``blocks.resolve``), so this module imports nothing from the network.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from craft.errors import ConfigError

PART_KINDS = ("norm", "mlp", "positions")  # named parts: a built-in name or an import path (blocks.py)


@dataclass
class GPTConfig:
    """The network's shape and parts. Each field is also an argument of ``LanguageModel`` (the
    ``model:`` section of a config), documented here once: ``--help`` shows these lines.

    Args:
        vocab_size: Tokens in the vocabulary (linked from the data module; never set by hand).
        block_size: Context length (linked from `data.block_size`).
        d_model: Width of the residual stream.
        n_layers: Transformer blocks.
        n_head: Attention heads (must divide d_model).
        d_hid: Hidden width of each MLP (a SwiGLU MLP uses 2/3 of it: same parameter count).
        dropout: Dropout on embeddings, attention output and MLP output.
        bias: Biases in the linear layers and LayerNorm (false: no-bias linears, as nanochat).
        norm: Normalization: layernorm, rmsnorm, rmsnorm_free (RMSNorm without a learned scale),
            or a class's import path (see craft/model/blocks.py).
        mlp: MLP: gelu, swiglu, relu2 (ReLU squared), or a class's import path.
        positions: Position scheme: learned (added embeddings), rotary, or a class's import path.
        qk_norm: Normalize each head's queries and keys (with `norm`, over the head size) before
            attention (QK-norm: modded-nanogpt, nanochat, OLMo 2).
        tie_head: Share the output head's weights with the token embedding (false: an untied head
            of its own, vocab_size x d_model more parameters).
        softcap: Squash the logits into (-softcap, softcap) with tanh (Gemma 2, nanochat's 15);
            0 turns it off.
        zero_init: Start every output projection (attention, MLP, and an untied head) at zero, so
            each block begins as the identity (modded-nanogpt).
        value_embeds: Value embeddings: a second token embedding per layer, on every other layer
            counted from the last, added to the attention values with a learned gate (modded-nanogpt,
            nanochat).
        scalars: Per-layer learned scalars on the residual stream and on the token embedding
            (x0) fed back into every block: x = a_i * x + b_i * x0 (nanochat).
        unet: U-net skips: the outputs of the first n_layers // 2 blocks, last first, are added to
            the inputs of the last n_layers // 2 blocks, each with a learned weight starting at 1
            (modded-nanogpt).
    """

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
    qk_norm: bool = False
    tie_head: bool = True
    softcap: float = 0.0
    zero_init: bool = False
    value_embeds: bool = False
    scalars: bool = False
    unet: bool = False

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
        if isinstance(self.softcap, bool) or not isinstance(self.softcap, (int, float)) or self.softcap < 0:
            problems.append(f"softcap must be a number >= 0 (0: off), got {self.softcap!r}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        for kind in PART_KINDS:  # a name's meaning is resolve()'s to check, where the network is built
            name = getattr(self, kind)
            if not isinstance(name, str) or not name:
                problems.append(f"{kind} must be a part's name or a class's import path, got {name!r}")
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))

    @classmethod
    def check_names(cls, fields: dict) -> None:
        """Refuse, in one line, a name that is not a field (before ``GPTConfig(**fields)``)."""
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown model field(s) {unknown}: the fields are {list(cls.__dataclass_fields__)}")

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
