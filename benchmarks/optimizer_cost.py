"""Training tokens/s with Muon + AdamW against AdamW alone, one process, steps alternated.

    python benchmarks/optimizer_cost.py [--steps 12] [--config configs/got_char.yaml]

Builds the config's network (char vocabulary of 100) once per optimizer, from the same init, and
times full training steps (forward, backward, optimizer step) on a fixed random batch of the
config's shape, alternating the two so drift of a busy machine hits both alike. Prints the median
tokens/s of each and their ratio (the figure benchmarks/README.md quotes).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from statistics import median

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from craft.compare import merged_config  # noqa: E402
from craft.model import GPT, GPTConfig  # noqa: E402
from craft.optim import build_optimizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", nargs="+", default=["configs/got_char.yaml"])
    p.add_argument("--steps", type=int, default=12, help="timed steps per optimizer (after 2 warm-up steps)")
    args = p.parse_args()
    cfg = merged_config(args.config)
    model, data = cfg["model"], cfg["data"]
    config = GPTConfig.from_section(model, vocab_size=100, block_size=data["block_size"])
    torch.manual_seed(0)
    base = GPT(config)
    x = torch.randint(0, 100, (data["batch_size"], data["block_size"] + 1))
    runs = {}
    for name in ("adamw", "muon"):
        m = copy.deepcopy(base).train()
        opt = build_optimizer(m, name, model.get("lr", 1e-3), 0.1, (0.9, 0.99), 0.01, 0.95, "match_rms_adamw")
        runs[name] = (m, opt)

    def step(name: str) -> float:
        m, opt = runs[name]
        start = time.perf_counter()
        _, loss = m(x[:, :-1], x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    for _ in range(2):
        for name in runs:
            step(name)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.steps):
        for name in runs:
            times[name].append(step(name))
    tokens = x[:, :-1].numel()
    rate = {name: tokens / median(t) for name, t in times.items()}
    print(f"config {' + '.join(args.config)}: {base.num_params():,} parameters, {tokens:,} tokens per step")
    for name, r in rate.items():
        print(f"  {name:6s} median {median(times[name]):.3f} s/step  {r:,.0f} tokens/s")
    print(f"  muon / adamw tokens/s: {rate['muon'] / rate['adamw']:.3f}")


if __name__ == "__main__":
    main()
