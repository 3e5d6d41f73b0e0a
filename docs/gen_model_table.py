"""Write the preset table of docs/model.md: each shipped config's model built for real and counted.

python docs/gen_model_table.py

The count is checked against the closed-form formula in docs/model.md before anything is written.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from craft.compare import merged_config  # noqa: E402
from craft.model import GPT, GPTConfig  # noqa: E402
from craft.model.blocks import swiglu_width  # noqa: E402

PRESETS = [
    ["configs/got_char.yaml"],
    ["configs/got_char_modern.yaml"],
    ["configs/got_char.yaml", "configs/presets/classic.yaml"],
    ["configs/got_bpe.yaml"],
    ["configs/quickstart.yaml"],
    ["configs/quickstart.yaml", "configs/presets/modern.yaml"],
    ["configs/quickstart.yaml", "configs/presets/classic.yaml"],
    ["configs/quickstart.yaml", "configs/presets/bpe.yaml"],
]
CHAR_VOCAB = 100  # a char vocabulary is the corpus's symbol count: ~100 for an English book


def formula(c: GPTConfig) -> int:
    """The closed form of docs/model.md, every part and component included."""
    d, h, L, V, T, b = c.d_model, c.d_hid, c.n_layers, c.vocab_size, c.block_size, int(c.bias)

    def norm(n: int) -> int:  # LayerNorm: weight (+ bias); RMSNorm: weight; rmsnorm_free: nothing
        return {"layernorm": n + b * n, "rmsnorm": n, "rmsnorm_free": 0}[c.norm]

    attn = 4 * d * d + b * 4 * d + (2 * norm(d // c.n_head) if c.qk_norm else 0)  # qkv, proj, QK-norm
    if c.mlp in ("gelu", "relu2"):
        mlp = 2 * d * h + b * (h + d)
    else:
        w = swiglu_width(h)
        mlp = 3 * d * w + b * (2 * w + d)
    positions = T * d if c.positions == "learned" else 0
    value_embeds = (L + 1) // 2 * (V * d + 1) if c.value_embeds else 0  # every other layer: table + gate
    scalars = 2 * L if c.scalars else 0
    unet = L // 2 if c.unet else 0  # a weight per skip
    head = 0 if c.tie_head else V * d
    return V * d + positions + L * (2 * norm(d) + attn + mlp) + norm(d) + value_embeds + scalars + unet + head


# One row per component added to the classic block at the got_char shape (100-symbol vocabulary), and
# nanochat's whole recipe (the speedrun preset's block).
COMPONENTS = [
    {},
    {"qk_norm": True},
    {"tie_head": False},
    {"softcap": 15.0},
    {"zero_init": True},
    {"bias": False},
    {"value_embeds": True},
    {"scalars": True},
    {"unet": True},
    {"mlp": "relu2"},
    {"norm": "rmsnorm_free"},
    {
        "norm": "rmsnorm_free",
        "mlp": "relu2",
        "positions": "rotary",
        "bias": False,
        "qk_norm": True,
        "tie_head": False,
        "softcap": 15.0,
        "zero_init": True,
        "value_embeds": True,
        "scalars": True,
    },
]


def component_rows() -> list[str]:
    base = GPT(GPTConfig(vocab_size=CHAR_VOCAB, block_size=256, d_model=128, n_layers=6, n_head=8, d_hid=512))
    out = ["| got_char shape, classic block, with | params | vs classic | non-embedding |", "|---|---:|---:|---:|"]
    for fields in COMPONENTS:
        c = GPTConfig(vocab_size=CHAR_VOCAB, block_size=256, d_model=128, n_layers=6, n_head=8, d_hid=512, **fields)
        m = GPT(c)
        n = m.num_params()
        assert n == formula(c), (fields, n, formula(c))
        name = ", ".join(f"{k}: {str(v).lower()}" for k, v in fields.items()) or "(nothing: the classic block)"
        if len(fields) > 3:
            name = "all of them (nanochat's recipe, rotary)"
        out.append(f"| {name} | {n:,} | {n - base.num_params():+,} | {m.num_params(non_embedding=True):,} |")
    return out


def rows() -> list[str]:
    out = [
        "| config | norm / MLP / positions | vocab | params | non-embedding | MFLOP per trained token |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for files in PRESETS:
        cfg = merged_config([str(ROOT / f) for f in files])
        model, data = cfg["model"], cfg["data"]
        tok = data.get("tokenizer")
        vocab = tok["init_args"]["vocab_size"] if tok else CHAR_VOCAB
        c = GPTConfig.from_section(model, vocab_size=vocab, block_size=data["block_size"])
        m = GPT(c)
        n = m.num_params()
        assert n == formula(c), (files, n, formula(c))
        name = " + ".join(Path(f).stem for f in files)
        out.append(
            f"| {name} | {c.norm} / {c.mlp} / {c.positions} | {vocab:,} | {n:,} | "
            f"{m.num_params(non_embedding=True):,} | {m.flops_per_token() / 1e6:.2f} |"
        )
    return out


def main() -> None:
    path = ROOT / "docs" / "model.md"
    text = path.read_text()
    table = "\n".join(["<!-- table: python docs/gen_model_table.py -->", *rows(), "<!-- end table -->"])
    new = re.sub(r"<!-- table: .*?<!-- end table -->", lambda _: table, text, flags=re.S)
    components = "\n".join(
        ["<!-- components: python docs/gen_model_table.py -->", *component_rows(), "<!-- end components -->"]
    )
    new = re.sub(r"<!-- components: .*?<!-- end components -->", lambda _: components, new, flags=re.S)
    path.write_text(new)
    print(table)
    print(components)


if __name__ == "__main__":
    main()
