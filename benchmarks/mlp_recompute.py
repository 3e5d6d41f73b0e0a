"""Recomputing the activation in the backward pass: plain autograd against craft's MLPs, got_char shape.

    python benchmarks/mlp_recompute.py [--rounds 5] [--step-rounds 6]

Plain autograd keeps ``h`` and ``gelu(h)`` for the backward pass; craft's ``GeluMLP`` keeps ``h``
and recomputes ``gelu(h)`` there (``craft.model.kernels.GeluProj``); likewise ``ReluSquaredMLP``
keeps ``relu(h)`` alone instead of it and its square (``ReluSquaredProj``). Measures one MLP alone (median
ms and minor page faults per forward + backward, bytes kept for backward), what the whole model
keeps for backward at dropout 0 and 0.1 (plain forms against craft's), and whole training steps
of the got_char model on Python's docs in one process, the two MLP forms alternating every 3 steps
(the first of each 3 not timed), so both see the same machine. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.plain_loop import endless_batches, train_step  # noqa: E402
from craft.compare import merged_config  # noqa: E402
from craft.data import TextDataModule  # noqa: E402
from craft.model import GPT, GPTConfig  # noqa: E402
from craft.model.blocks import GeluMLP, ReluSquaredMLP  # noqa: E402
from craft.model.kernels import Dropout  # noqa: E402
from craft.optim import param_groups  # noqa: E402

GOT_CHAR = merged_config(["configs/got_char.yaml"])


def got_char(**fields) -> GPTConfig:
    return GPTConfig.from_section(GOT_CHAR["model"], block_size=GOT_CHAR["data"]["block_size"], **fields)


def textbook_mlp(self: GeluMLP, x: torch.Tensor) -> torch.Tensor:
    return self.dropout(self.proj(F.gelu(self.fc(x))))


@contextmanager
def textbook(mlp: bool = True, dropout: bool = False) -> Iterator[None]:
    """Inside: GeluMLP as plain autograd computes it and, with ``dropout``, PyTorch's own dropout."""
    saved = GeluMLP.forward, Dropout.forward
    if mlp:
        GeluMLP.forward = textbook_mlp
    if dropout:
        Dropout.forward = torch.nn.Dropout.forward
    try:
        yield
    finally:
        GeluMLP.forward, Dropout.forward = saved


def measure(forward, x: torch.Tensor, grad: torch.Tensor, repeats: int = 5) -> tuple[float, float]:
    forward(x).backward(grad)  # warm-up
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(repeats):
        forward(x).backward(grad)
    ms = (time.perf_counter() - start) / repeats * 1e3
    return ms, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / repeats


def saved_bytes(forward, x: torch.Tensor) -> int:
    sizes: list[int] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.nbytes) or t, lambda t: t):
        forward(x)
    return sum(sizes)


def model_saved_mb(dropout: float, plain: bool) -> float:
    """Activations the got_char model keeps for backward (each storage once), one batch."""
    torch.manual_seed(0)
    model = GPT(got_char(vocab_size=100, dropout=dropout)).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    x = torch.randint(0, 100, (GOT_CHAR["data"]["batch_size"], model.config.block_size))
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    # plain: what autograd keeps with the textbook MLP and PyTorch's own dropout
    with textbook(dropout=True) if plain else nullcontext():
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x, x)
    return round(sum(storages.values()) / 2**20, 1)


def training_steps(rounds: int) -> dict:
    """Median seconds and page faults per got_char training step with each MLP form."""
    data = GOT_CHAR["data"]
    dm = TextDataModule(
        "data/pydoc_topics.txt",
        block_size=data["block_size"],
        batch_size=data["batch_size"],
        seed=1337,
        builtin_corpus="pydoc",
    )
    dm.setup("fit")
    torch.manual_seed(0)
    model = GPT(got_char(vocab_size=dm.prepare_vocab())).train()
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    batches = endless_batches(dm)

    def step() -> tuple[float, int]:
        x, y = next(batches)
        faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        train_step(model, opt, x, y, clip=1.0)
        return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

    times: dict[str, list[float]] = {"plain autograd": [], "craft GeluMLP": []}
    faults: dict[str, list[int]] = {k: [] for k in times}
    for _ in range(3):
        step()
    for _ in range(rounds):
        for name in times:
            with textbook() if name == "plain autograd" else nullcontext():
                step()  # the first step after a switch settles the allocator; not timed
                for _ in range(2):
                    t, f = step()
                    times[name].append(t)
                    faults[name].append(f)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "step_s": {k: round(v, 3) for k, v in med.items()},
        "speedup": round(med["plain autograd"] / med["craft GeluMLP"], 3),
        "page_faults_per_step": {k: round(statistics.median(v)) for k, v in faults.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--step-rounds", type=int, default=6, help="rounds of whole training steps (0: skip)")
    args = p.parse_args()
    torch.manual_seed(0)
    cfg = got_char(vocab_size=100)
    mlp, relu2 = GeluMLP(cfg), ReluSquaredMLP(cfg)
    shape = (GOT_CHAR["data"]["batch_size"], cfg.block_size, cfg.d_model)
    x, grad = torch.randn(shape, requires_grad=True), torch.randn(shape)
    variants = {
        "plain autograd": lambda t: textbook_mlp(mlp, t),
        "craft GeluMLP": mlp,
        "relu2 plain autograd": lambda t: relu2.proj(F.relu(relu2.fc(t)).square()),
        "craft ReluSquaredMLP": relu2,
    }
    ms: dict[str, list[float]] = {k: [] for k in variants}
    faults: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, forward in variants.items():
            t, f = measure(forward, x, grad)
            ms[name].append(t)
            faults[name].append(f)
    out = {
        "ms_forward_backward": {k: round(statistics.median(v), 1) for k, v in ms.items()},
        "page_faults": {k: round(statistics.median(v)) for k, v in faults.items()},
        "saved_for_backward_mb": {k: round(saved_bytes(f, x) / 2**20, 1) for k, f in variants.items()},
        "threads": torch.get_num_threads(),
    }
    out["model_saved_for_backward_mb"] = {
        f"{form}, dropout {d}": model_saved_mb(d, plain=form == "plain")
        for form in ("plain", "craft")
        for d in (0.0, 0.1)
    }
    if args.step_rounds:
        out["training_step"] = training_steps(args.step_rounds)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
