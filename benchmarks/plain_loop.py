"""The yardstick for Lightning's overhead: a plain PyTorch loop over craft's GPT and the same batches.

    python benchmarks/plain_loop.py --config configs/got_char.yaml --data.path data/pydoc_topics.txt --steps 40

Same model, data module batches, AdamW parameter groups and gradient clipping as ``craft fit``;
no Lightning, no logging, no checkpoints. Prints one JSON line (tokens/s after ``--warmup`` steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.memory import rss_bytes  # noqa: E402
from craft.compare import merged_config  # noqa: E402
from craft.data import TextDataModule  # noqa: E402
from craft.model import GPT, GPTConfig  # noqa: E402
from craft.optim import param_groups  # noqa: E402


def endless_batches(dm: TextDataModule) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches, epoch after epoch."""
    while True:
        yield from dm.train_dataloader()


def train_step(model: GPT, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, clip: float) -> None:
    """One optimizer step as ``craft fit`` takes it: loss, backward, gradient clipping, AdamW."""
    _, loss = model(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", nargs="+", required=True, help="one config or several, stacked in order")
    p.add_argument("--data.path", dest="data_path", required=True)
    p.add_argument("--model.dropout", dest="dropout", type=float, default=None)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args()
    cfg = merged_config(args.config)
    m, d = cfg["model"], cfg["data"]
    if m.get("optimizer", "adamw") != "adamw":
        p.error("the plain loop trains with AdamW only: stack configs/presets/classic.yaml or modern.yaml")
    torch.manual_seed(cfg.get("seed_everything", 0))
    dm = TextDataModule(args.data_path, block_size=d["block_size"], batch_size=d["batch_size"], seed=1337)
    dm.setup("fit")
    overrides = {} if args.dropout is None else {"dropout": args.dropout}
    model = GPT(GPTConfig.from_section(m, vocab_size=dm.vocab_size, block_size=d["block_size"], **overrides)).train()
    opt = torch.optim.AdamW(param_groups(model, m.get("weight_decay", 0.1)), lr=m.get("lr", 1e-3), betas=(0.9, 0.99))
    clip = cfg.get("trainer", {}).get("gradient_clip_val", 1.0)
    times, tokens = [], []
    batches = endless_batches(dm)
    for _ in range(args.steps):
        x, y = next(batches)
        train_step(model, opt, x, y, clip)
        times.append(time.perf_counter())
        tokens.append(x.numel())
    t, n = times[args.warmup :], tokens[args.warmup + 1 :]
    print(
        json.dumps(
            {
                "tokens_per_s": round(sum(n) / (t[-1] - t[0]), 1),
                "steps_timed": len(t) - 1,
                "rss_end": rss_bytes(),
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
