"""craft against its Hugging Face export: logits, greedy text, and generation speed, per checkpoint.

    python benchmarks/hf_parity.py --ckpt_path logs/bench_got_char/checkpoints/last.ckpt \
        --ckpt_path logs/bench_got_char_modern/checkpoints/last.ckpt --data.path data/pydoc_topics.txt

Each checkpoint is exported with ``python -m craft export --format hf`` into a temporary folder and
loaded back with ``AutoModelForCausalLM`` / ``AutoTokenizer``. On a full context of the corpus's
validation text: the largest absolute logit difference. From the prompt "\\n": whether 200 greedy
tokens give the same text, and tokens/s of each side (craft's KV-cache engine, transformers'
``generate`` with its cache), median of 3. Writes ``benchmarks/results/hf_parity.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from craft import LanguageModel  # noqa: E402
from craft.export import export  # noqa: E402

NEW = 200


def measure(ckpt: Path, corpus: Path) -> dict:
    import transformers

    lm = LanguageModel.load_from_checkpoint(ckpt, weights_only=True).eval()
    with tempfile.TemporaryDirectory() as tmp:
        export(ckpt, Path(tmp) / "hf", format="hf")
        model = transformers.AutoModelForCausalLM.from_pretrained(Path(tmp) / "hf").eval()
        fast = transformers.AutoTokenizer.from_pretrained(Path(tmp) / "hf")
        text = corpus.read_text(encoding="utf-8")
        ids = lm.tokenizer.encode(text[-20_000:])[-lm.config.block_size :]
        same_ids = fast(text[-20_000:])["input_ids"][-lm.config.block_size :] == ids
        x = torch.tensor([ids])
        with torch.no_grad():
            diff = (lm.model(x, all_logits=True)[0] - model(x).logits).abs().max().item()
        prompt = "\n"
        p = torch.tensor([fast(prompt)["input_ids"]])
        ours_s, theirs_s = [], []
        for _ in range(3):
            t = time.perf_counter()
            ours = lm.generate(prompt, max_new_tokens=NEW, temperature=0)
            ours_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.no_grad():
                # The mask given: inferred from a pad id, it would hide prompt tokens that share it.
                out = model.generate(
                    p, attention_mask=torch.ones_like(p), max_new_tokens=NEW, do_sample=False, pad_token_id=0
                )
            theirs_s.append(time.perf_counter() - t)
        theirs = fast.decode(out[0, p.shape[1] :].tolist())
    return {
        "architecture": type(model).__name__,
        "params": lm.model.num_params(),
        "max_logit_diff": diff,
        "same_ids": same_ids,
        "same_text": ours == theirs,
        "craft_tok_s": NEW / statistics.median(ours_s),
        "hf_tok_s": NEW / statistics.median(theirs_s),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt_path", type=Path, action="append", required=True)
    p.add_argument("--data.path", dest="corpus", type=Path, default=ROOT / "data" / "pydoc_topics.txt")
    args = p.parse_args()
    rows = [
        "| checkpoint | transformers class | params | max logit diff (full context) | tokenizer ids equal "
        f"| greedy {NEW} tokens equal | craft tok/s | transformers tok/s |",
        "|---|---|---:|---:|---|---|---:|---:|",
    ]
    for ckpt in args.ckpt_path:
        r = measure(ckpt, args.corpus)
        print(r, file=sys.stderr)
        rows.append(
            f"| `{ckpt}` | {r['architecture']} | {r['params']:,} | {r['max_logit_diff']:.1e} | {r['same_ids']} "
            f"| {r['same_text']} | {r['craft_tok_s']:.0f} | {r['hf_tok_s']:.0f} |"
        )
    out = ROOT / "benchmarks" / "results" / "hf_parity.md"
    out.write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
