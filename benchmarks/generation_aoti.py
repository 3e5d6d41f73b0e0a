"""A lead for batch-1 generation: one decode step compiled ahead of time by AOTInductor.

    python benchmarks/generation_aoti.py --config configs/got_char.yaml [--steps 500]

Eager PyTorch spends ~17 µs of fixed cost on each of the ~213 kernels of a cached decode step
(`generation.py`). This exports the same step with a static KV cache (a buffer of ``block_size``
slots written in place, attention masked to the filled ones) and compiles it to one C++ function
(`torch._inductor.aoti_compile_and_package`), once with matmuls as library calls and once with
inductor's own C++ GEMM kernels (``max_autotune``). It prints one JSON line: compile seconds,
decode steps/s at 1 and 2 threads (median of ``--repeats``), the eager step beside it, and the
largest logit difference from the eager model's full forward pass.

Not wired into craft: a benchmark of the idea only (learned positions, greedy, batch 1; positions
cycle through the ``block_size`` slots, which costs the same per step as the real sliding window).
Needs a C++ compiler.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.generation import untrained_model  # noqa: E402
from craft.model import GPT  # noqa: E402


class StaticDecodeStep(nn.Module):
    """``(token (1, 1), position (1,)) -> logits (1, V)``, keys and values kept in fixed buffers."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        c = gpt.config
        if c.positions != "learned":
            raise SystemExit("generation_aoti.py: only learned positions are implemented")
        self.gpt = gpt
        shape = (c.n_layers, 1, c.n_head, c.block_size, c.head_size)
        self.register_buffer("k", torch.zeros(shape))
        self.register_buffer("v", torch.zeros(shape))

    def forward(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        g, c = self.gpt, self.gpt.config
        x = g.tok_emb(token) + g.positions.emb(pos)  # (1, 1, C)
        visible = (torch.arange(c.block_size) <= pos).view(1, -1)
        for i, blk in enumerate(g.blocks):
            q, k, v = blk.attn.qkv(blk.ln_1(x)).split(c.d_model, dim=2)
            q, k, v = (t.view(1, 1, c.n_head, c.head_size).transpose(1, 2) for t in (q, k, v))
            self.k[i].index_copy_(2, pos, k)
            self.v[i].index_copy_(2, pos, v)
            y = F.scaled_dot_product_attention(q, self.k[i], self.v[i], attn_mask=visible)
            x = x + blk.attn.proj(y.transpose(1, 2).reshape(1, 1, c.d_model))
            x = x + blk.mlp(blk.ln_2(x))
        return g.head(g.ln_f(x))[:, -1]


def steps_per_s(step, n: int, block: int) -> float:
    token, positions = torch.zeros(1, 1, dtype=torch.long), [torch.tensor([p % block]) for p in range(n)]
    with torch.no_grad():
        for p in range(10):
            step(token, positions[p])
        start = time.perf_counter()
        for p in range(n):
            token = step(token, positions[p]).argmax(-1, keepdim=True)
        return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    gpt = untrained_model(args.config).eval()
    block = gpt.config.block_size
    example = (torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]))
    with torch.no_grad():
        exported = torch.export.export(StaticDecodeStep(gpt), example)
    variants = {"library_matmuls": {}, "cpp_gemm": {"max_autotune": True, "max_autotune_gemm_backends": "CPP"}}
    out: dict = {"params": gpt.num_params(), "steps": args.steps, "torch": torch.__version__}
    compiled = {"eager": StaticDecodeStep(gpt)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in variants.items():
            start = time.perf_counter()
            path = torch._inductor.aoti_compile_and_package(
                exported, package_path=f"{tmp}/{name}.pt2", inductor_configs=options
            )
            out[f"compile_s_{name}"] = round(time.perf_counter() - start, 1)
            compiled[name] = torch._inductor.aoti_load_package(path)
        # Same computation: 20 steps of each against the eager model's full forward pass.
        ids = torch.randint(0, 100, (1, 20))
        with torch.no_grad():
            full, _ = gpt(ids, all_logits=True)
            for name, step in compiled.items():
                diff = max((step(ids[:, [t]], torch.tensor([t])) - full[:, t]).abs().max().item() for t in range(20))
                out[f"max_logit_diff_{name}"] = diff
        for threads in (1, 2):
            torch.set_num_threads(threads)
            rates: dict[str, list[float]] = {name: [] for name in compiled}
            for _ in range(args.repeats):  # interleaved rounds
                for name, step in compiled.items():
                    rates[name].append(steps_per_s(step, args.steps, block))
            for name, r in rates.items():
                out[f"tok_s_{name}_{threads}thread"] = round(statistics.median(r), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
