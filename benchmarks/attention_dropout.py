"""Why craft never drops attention weights: one layer's attention, forward + backward, with and without
``dropout_p`` in ``scaled_dot_product_attention``, at the got_char shape (batch 64, 8 heads, 256, 16).

    python benchmarks/attention_dropout.py [--rounds 3]

On CPU, attention dropout leaves the fused flash-attention kernel for the unfused math path, which
materialises the (T, T) score matrix per head. Prints one JSON line: median milliseconds of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def attention_ms(dropout_p: float, batch: int, heads: int, block: int, head_size: int) -> float:
    q, k, v = (torch.randn(batch, heads, block, head_size, requires_grad=True) for _ in range(3))
    F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p).sum().backward()  # warm-up
    start = time.perf_counter()
    F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p).sum().backward()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    shape = dict(batch=64, heads=8, block=256, head_size=16)
    times: dict[str, list[float]] = {"dropout_0": [], "dropout_0.1": []}
    for _ in range(args.rounds):  # interleaved, so drift hits both alike
        times["dropout_0"].append(attention_ms(0.0, **shape))
        times["dropout_0.1"].append(attention_ms(0.1, **shape))
    ms = {k: round(statistics.median(v), 1) for k, v in times.items()}
    slowdown = round(ms["dropout_0.1"] / ms["dropout_0"], 2)
    print(
        json.dumps(
            {"shape": shape, "ms_forward_backward": ms, "slowdown": slowdown, "threads": torch.get_num_threads()}
        )
    )


if __name__ == "__main__":
    main()
