"""What each graph pass removes from one traced decoder step: craft's ``drop_round_trips``
(craft/export/rewrite.py) against onnxscript's optimizer and its default rewrite rules, on the
speedrun recipe's parts (parameter-free RMSNorm, QK-norm, rotary, ReLU²) at a tiny shape.

    python benchmarks/onnx_rewrites.py      # a few seconds; prints a markdown table
"""

from __future__ import annotations

import collections
import copy

import onnx
import onnxscript
import torch
from onnxscript import optimizer
from onnxscript import rewriter as onnxscript_rewriter

from craft.export.rewrite import drop_round_trips
from craft.export.trace import trace
from craft.model import GPT, GPTConfig

KINDS = ("Reshape", "Transpose", "Split", "Concat")


def traced(config: GPTConfig) -> onnx.ModelProto:
    """The exporter's graph of one decoder step, before any pass (what craft's export starts from)."""
    return trace(GPT(config))


def ours(model: onnx.ModelProto) -> onnx.ModelProto:
    drop_round_trips(model)
    return model


def main() -> None:
    config = GPTConfig(
        vocab_size=40, block_size=16, d_model=64, n_layers=2, n_head=4, d_hid=128,
        norm="rmsnorm_free", qk_norm=True, positions="rotary", mlp="relu2",
    )  # fmt: skip
    model = traced(config)
    passes = {
        "traced (no pass)": lambda m: m,
        "onnxscript optimizer.optimize": optimizer.optimize,
        "onnxscript rewriter.rewrite (default rules)": onnxscript_rewriter.rewrite,
        "both onnxscript passes": lambda m: onnxscript_rewriter.rewrite(optimizer.optimize(m)),
        "craft drop_round_trips": ours,
    }
    print(f"onnxscript {onnxscript.__version__}, onnx {onnx.__version__}, torch {torch.__version__}")
    print("| pass | nodes | " + " | ".join(KINDS) + " |")
    print("|---|---:|" + "---:|" * len(KINDS))
    for name, apply in passes.items():
        out = apply(copy.deepcopy(model))
        kinds = collections.Counter(n.op_type for n in out.graph.node)
        print(f"| {name} | {len(out.graph.node)} | " + " | ".join(str(kinds[k]) for k in KINDS) + " |")


if __name__ == "__main__":
    main()
