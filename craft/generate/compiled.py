"""Fast batch-B generation on CPU: the model's own one-token forward, compiled ahead of time.

A cached decode step in eager PyTorch is ~200 small kernels, each with a fixed cost on a small CPU:
at batch 1 that, not arithmetic, bounds the speed. ``GPT.forward`` with a ``KVCache`` has fixed
shapes (one ``block_size``-slot key and value buffer per layer, written in place, attention masked to
the filled slots), so ``torch.export`` traces it as it is (``DecodeStep`` only passes the buffers
in) and AOTInductor compiles it into one C++ function. There is no second implementation.

Compiling needs a C++ compiler and takes tens of seconds (benchmarks/README.md); the result is cached
on disk per weights, shape, batch size, thread count, torch version and the code the step is made of
(``$XDG_CACHE_HOME/craft/decode``, else ``~/.cache/craft/decode``), so a checkpoint is compiled once,
and again only when that code changes. The engine (``craft/generate/engine.py``) keeps the loaded
step while the weights are unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

import craft.model
from craft.errors import ConfigError
from craft.generate.loop import Step
from craft.model.cache import KVCache
from craft.private import boxed_runner


@functools.cache
def step_code() -> str:
    """A digest of the code a compiled step is made of: the network package and this file. A
    package compiled from other code is never reused (no version number to remember to bump)."""
    h = hashlib.sha256()
    for path in sorted(Path(craft.model.__file__).parent.glob("*.py")) + [Path(__file__)]:
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


class DecodeStep(nn.Module):
    """``(token (B, 1), pos (1,), k_0, v_0, k_1, v_1, ...) -> logits (B, V)``: ``GPT.forward`` with
    the cache's buffers as inputs (written in place at slot ``pos``)."""

    def __init__(self, gpt: nn.Module) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, token: torch.Tensor, pos: torch.Tensor, *buffers: torch.Tensor) -> torch.Tensor:
        logits, _ = self.gpt(token, cache=KVCache.from_buffers(buffers), input_pos=pos)
        return logits[:, -1]


def masked_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """``scaled_dot_product_attention`` as the ops a compiler fuses (for export only): the masked
    scores, a softmax, a matmul. It covers what ``GPT.forward`` uses with a cache: an additive mask
    over the slots, no dropout."""
    if dropout_p or is_causal or enable_gqa or attn_mask is None or attn_mask.dtype == torch.bool:
        raise ConfigError("the compiled decode step expects attention with an additive cache mask and nothing else")
    scores = (q @ k.transpose(-2, -1)) * (scale if scale is not None else 1.0 / math.sqrt(q.size(-1)))
    return (scores + attn_mask).softmax(dim=-1) @ v


def compiled(run) -> Step:
    """A ``Step`` (``craft.generate.loop``) from a compiled package's runner."""
    boxed = boxed_runner(run)  # skips the package's per-call pytree work, where torch has it
    if boxed is not None:
        return lambda token, pos, cache: boxed([token, pos, *cache.buffers()])[0]
    return lambda token, pos, cache: run(token, pos, *cache.buffers())


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "craft" / "decode"


def compiled_threads(batch_size: int) -> int:
    """Threads compiled into the step's loops. At batch 1 one thread: the step is a few hundred
    microseconds of small loops, where a second thread bought no steady gain and made the speed
    swing from process to process (measured in benchmarks/README.md)."""
    return 1 if batch_size == 1 else torch.get_num_threads()


def package_key(gpt: nn.Module, batch_size: int) -> str:
    """Names one compiled package: weights, config, batch size, thread count, torch's version and
    the step's code. Hashes every weight: the engine calls it once per set of weights."""
    identity = f"{step_code()} {torch.__version__} {gpt.config} {batch_size} {compiled_threads(batch_size)}"
    h = hashlib.sha256(identity.encode())
    for name, t in gpt.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def package_path(gpt: nn.Module, batch_size: int, folder: Path | None = None) -> Path:
    """Where the compiled package for these weights and batch size lives (or will)."""
    return (folder or cache_dir()) / f"{package_key(gpt, batch_size)}.pt2"


# Loads a package and runs one step on zeros: argv = package, JSON list of buffer shapes (B first).
_TRIAL = """
import json, sys, torch
path, shapes = sys.argv[1], json.loads(sys.argv[2])
step = torch._inductor.aoti_load_package(path)
step(torch.zeros(shapes[0][0], 1, dtype=torch.long), torch.tensor([0]), *(torch.zeros(s) for s in shapes))
"""


def trial_step(package: str, shapes: list[list[int]]) -> None:
    """Load ``package`` and run one step in a child process; ``RuntimeError`` if that fails or crashes.

    A package that compiles can still crash its loader (seen on one GPU machine's image; see
    benchmarks/README.md). In a child the crash costs a warning and eager generation, not the
    user's process, and such a package is never cached.
    """
    cmd = [sys.executable, "-c", _TRIAL, package, json.dumps(shapes)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError("the compiled decode step did not load and run one step within 300 s") from e
    if done.returncode != 0:
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the compiled decode step failed to load and run a step in a child process ({how}: {last})")


def compile_step(gpt: nn.Module, batch_size: int, folder: Path | None = None, path: Path | None = None) -> Step:
    """The decode ``Step`` of ``gpt`` compiled by AOTInductor, or loaded if compiled before.

    ``path`` (from ``package_path``) saves hashing the weights again. CPU float32 only. A new
    package is loaded and run once in a child process (``trial_step``) before it is cached. Raises
    ``RuntimeError`` when compiling fails (e.g. without a C++ compiler) or the trial fails; callers
    fall back to eager generation. A part named by import path works here when ``torch.export``
    can trace it; otherwise the export's error is the reason given.
    """
    if next(gpt.parameters()).device.type != "cpu":
        raise ConfigError("the compiled decode step runs on CPU only; generate on this device without it")
    path = path or package_path(gpt, batch_size, folder)
    folder = path.parent
    if not path.exists():
        token, pos = torch.zeros(batch_size, 1, dtype=torch.long), torch.tensor([0])
        example = (token, pos, *KVCache.empty(gpt.config, batch_size).buffers())
        with torch.no_grad():
            exported = torch.export.export(DecodeStep(gpt).eval(), example)
            # Attention as its primitive ops, which the compiler fuses into its own loops over the
            # cache buffers; left as one library call it makes the step much slower (benchmarks/README.md).
            exported = exported.run_decompositions(
                {torch.ops.aten.scaled_dot_product_attention.default: masked_attention}
            )
        folder.mkdir(parents=True, exist_ok=True)
        # Compile to a temporary name and rename: an interrupted compile leaves no broken package.
        fd, tmp = tempfile.mkstemp(suffix=".pt2", dir=folder)
        os.close(fd)
        try:
            # Inductor's own C++ GEMM kernels beat library calls at these tiny matrix-vector shapes.
            options = {
                "max_autotune": True,
                "max_autotune_gemm_backends": "CPP",
                "cpp.threads": compiled_threads(batch_size),
            }
            torch._inductor.aoti_compile_and_package(exported, package_path=tmp, inductor_configs=options)
            trial_step(tmp, [list(t.shape) for t in example[2:]])
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return compiled(torch._inductor.aoti_load_package(str(path)))
