"""Fast batch-B generation on CPU: one decode step compiled ahead of time (AOTInductor).

A cached decode step in eager PyTorch is ~200 small kernels, each with a fixed cost of ~17 µs on a
small CPU: at batch 1 that, not arithmetic, bounds the speed. Here the step is written with fixed
shapes (a key/value buffer of ``block_size`` slots per layer, written in place, attention masked to
the filled slots), exported with ``torch.export`` and compiled by AOTInductor into one C++ function.

The prompt (and each re-encoded window after the context slides) still runs through the eager
model, whose keys and values are copied into the buffers; every new token then takes one call.

Compiling takes ~40 s here and needs a C++ compiler; the result is cached on disk per weights, shape,
batch size, thread count and torch version (``$XDG_CACHE_HOME/craft/decode``, else ``~/.cache/craft/decode``),
so a checkpoint is compiled once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from craft.errors import ConfigError
from craft.model.blocks import LearnedPositions, RotaryPositions, _rotate_half_pairs

# Bump when the step's code changes, so stale compiled packages are not reused.
STEP_VERSION = 3

Step = Callable[..., torch.Tensor]


class StaticDecodeStep(nn.Module):
    """``(token (B, 1), pos (1,), k_0, v_0, k_1, v_1, ...) -> logits (B, V)``, one new token per row.

    Each ``k_i`` / ``v_i`` is layer ``i``'s ``(B, n_head, block_size, head_size)`` buffer; slot
    ``pos`` is written in place and attention sees slots ``0..pos``. One buffer per layer, not one
    stacked tensor: an in-place write into a slice of a stacked input is functionalised by export
    into copies of the whole stack (60-70% of the step, measured; benchmarks/README.md).
    """

    def __init__(self, gpt: nn.Module) -> None:
        super().__init__()
        if not isinstance(gpt.positions, (LearnedPositions, RotaryPositions)):
            raise ConfigError(
                f"the compiled decode step knows learned and rotary positions, not {type(gpt.positions).__name__}"
            )
        self.gpt = gpt

    def forward(self, token: torch.Tensor, pos: torch.Tensor, *kv: torch.Tensor):
        g, c = self.gpt, self.gpt.config
        B, C, nh, hs = token.size(0), c.d_model, c.n_head, c.head_size
        x = g.tok_emb(token)  # (B, 1, C)
        if isinstance(g.positions, LearnedPositions):
            x = x + g.positions.emb(pos)
        hidden = torch.arange(c.block_size, device=token.device) > pos  # slots not yet written
        for i, blk in enumerate(g.blocks):
            q, k, v = blk.attn.qkv(blk.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, 1, nh, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, 1, hs)
            if isinstance(g.positions, RotaryPositions):
                cos, sin = g.positions.cos[pos].to(q.dtype), g.positions.sin[pos].to(q.dtype)
                q, k = _rotate_half_pairs(q, cos, sin), _rotate_half_pairs(k, cos, sin)
            keys, values = kv[2 * i], kv[2 * i + 1]
            keys.index_copy_(2, pos, k)
            values.index_copy_(2, pos, v)
            # Written out rather than scaled_dot_product_attention: the compiler fuses these into
            # its own loops, where the library call would be one more fixed cost per layer.
            scores = (q @ keys.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, 1, block)
            att = scores.masked_fill(hidden, float("-inf")).softmax(dim=-1)
            y = (att @ values).transpose(1, 2).reshape(B, 1, C)
            x = x + blk.attn.proj(y)
            x = x + blk.mlp(blk.ln_2(x))
        return g.head(g.ln_f(x))[:, -1]  # (B, V)


def kv_buffers(config, batch_size: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Zeroed ``k_0, v_0, k_1, v_1, ...``: one ``(B, n_head, block_size, head_size)`` buffer each."""
    shape = (batch_size, config.n_head, config.block_size, config.head_size)
    return [torch.zeros(shape, device=device) for _ in range(2 * config.n_layers)]


class Decoder:
    """The key/value buffers of one generation and the step that reads and writes them.

    ``step`` is the compiled function (see ``compile_decoder``) or, for tests and reference,
    a ``StaticDecodeStep`` run eagerly.
    """

    def __init__(self, gpt: nn.Module, batch_size: int, step: Step) -> None:
        device = next(gpt.parameters()).device
        self.batch_size = batch_size
        self.kv = kv_buffers(gpt.config, batch_size, device)
        loader = getattr(step, "loader", None)  # a compiled package: skip its per-call pytree work
        self._run = (lambda *inputs: loader.boxed_run(list(inputs))[0]) if loader is not None else step
        self._pos = [torch.tensor([p], device=device) for p in range(gpt.config.block_size)]

    def load(self, cache: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Take the keys and values of an eager forward pass over the context (slots 0..T-1)."""
        T = cache[0][0].size(2)
        for i, (k, v) in enumerate(cache):
            self.kv[2 * i][:, :, :T] = k
            self.kv[2 * i + 1][:, :, :T] = v

    def __call__(self, token: torch.Tensor, pos: int) -> torch.Tensor:
        """Logits ``(B, 1, V)`` for ``token`` ``(B, 1)`` at position ``pos``."""
        return self._run(token, self._pos[pos], *self.kv).unsqueeze(1)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "craft" / "decode"


def compiled_threads(batch_size: int) -> int:
    """Threads compiled into the step's loops. At batch 1 one thread: the step is ~250 µs of small
    loops, and on a shared 2-core VM a second thread bought nothing steady (208-393 µs per step
    against 219-307 with one, alternated in one process) and made the speed swing per process
    (benchmarks/README.md)."""
    return 1 if batch_size == 1 else torch.get_num_threads()


def package_key(gpt: nn.Module, batch_size: int) -> str:
    """Names one compiled package: weights, config, batch size, thread count and torch's version."""
    identity = f"{STEP_VERSION} {torch.__version__} {gpt.config} {batch_size} {compiled_threads(batch_size)}"
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

    A package that compiles can still crash its loader: on one GPU machine's image (torch
    2.11.0+cu130) loading segfaulted inside the package's own C++ (std::regex parsing its device
    string). In a child the crash costs a warning and eager generation, not the user's process,
    and such a package is never cached.
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


def compile_decoder(gpt: nn.Module, batch_size: int, folder: Path | None = None, path: Path | None = None) -> Decoder:
    """A ``Decoder`` whose step is compiled by AOTInductor, or loaded if compiled before.

    ``path`` (from ``package_path``) saves hashing the weights again. CPU float32 only. A new
    package is loaded and run once in a child process (``trial_step``) before it is cached. Raises
    ``RuntimeError`` when compiling fails (e.g. without a C++ compiler) or the trial fails; callers
    fall back to eager generation.
    """
    if next(gpt.parameters()).device.type != "cpu":
        raise ConfigError("the compiled decode step runs on CPU only; generate on this device without it")
    path = path or package_path(gpt, batch_size, folder)
    folder = path.parent
    if not path.exists():
        token, pos = torch.zeros(batch_size, 1, dtype=torch.long), torch.tensor([0])
        example = (token, pos, *kv_buffers(gpt.config, batch_size))
        with torch.no_grad():
            exported = torch.export.export(StaticDecodeStep(gpt).eval(), example)
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
    return Decoder(gpt, batch_size, torch._inductor.aoti_load_package(str(path)))
