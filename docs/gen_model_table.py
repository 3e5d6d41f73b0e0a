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
    ["configs/got_bpe.yaml"],
    ["configs/quickstart.yaml"],
    ["configs/quickstart.yaml", "configs/presets/modern.yaml"],
    ["configs/quickstart.yaml", "configs/presets/bpe.yaml"],
]
CHAR_VOCAB = 100  # a char vocabulary is the corpus's symbol count: ~100 for an English book


def formula(c: GPTConfig) -> int:
    d, h, L, V, T = c.d_model, c.d_hid, c.n_layers, c.vocab_size, c.block_size
    norm = 2 * d if c.norm == "layernorm" else d  # LayerNorm: weight + bias; RMSNorm: weight
    attn = (3 * d * d + 3 * d) + (d * d + d)  # qkv and output projection, with biases
    if c.mlp == "gelu":
        mlp = 2 * d * h + h + d
    else:
        w = swiglu_width(h)
        mlp = 3 * d * w + 2 * w + d
    positions = T * d if c.positions == "learned" else 0
    return V * d + positions + L * (2 * norm + attn + mlp) + norm  # the head is tied to the embedding


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
    path.write_text(new)
    print(table)


if __name__ == "__main__":
    main()
