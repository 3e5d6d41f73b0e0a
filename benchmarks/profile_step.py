"""Where a got_char training step spends its time (torch.profiler), grouped into matmuls, attention,
the optimizer and everything else, with the FLOP/s the matmuls reach at these shapes.

    python benchmarks/profile_step.py [--batch 64 --block 256 --dropout 0.0 --steps 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from craft.model import GPT, GPTConfig  # noqa: E402

GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"),
    "attention": ("scaled_dot_product", "flash_attention"),
    "optimizer": ("Optimizer.step", "aten::_fused_adamw", "aten::_foreach"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    shape = dict(d_model=128, n_layers=6, n_head=8, d_hid=512, dropout=args.dropout)
    cfg = GPTConfig(vocab_size=100, block_size=args.block, **shape)
    model = GPT(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 100, (args.batch, args.block))

    def step() -> None:
        _, loss = model(x, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for _ in range(args.steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    groups = dict.fromkeys([*GROUPS, "other"], 0.0)
    mm_flops = mm_time = 0.0
    for e in events:
        group = next((g for g, keys in GROUPS.items() if any(k in e.key for k in keys)), "other")
        groups[group] += e.self_cpu_time_total
        if e.key in ("aten::mm", "aten::addmm", "aten::bmm"):
            mm_flops += e.flops or 0
            mm_time += e.self_cpu_time_total
    step_s = total / 1e6 / args.steps
    tokens = args.batch * args.block
    out = {
        "step_seconds": round(step_s, 3),
        "tokens_per_s": round(tokens / step_s, 1),
        "share": {g: round(t / total, 3) for g, t in groups.items()},
        "matmul_gflops": round(mm_flops / (mm_time / 1e6) / 1e9, 1) if mm_time else None,
        "model_gflops": round(tokens * model.flops_per_token() / step_s / 1e9, 1),
        "top_ops": [
            (e.key, round(e.self_cpu_time_total / total, 3))
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
        ],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
