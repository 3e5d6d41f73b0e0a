"""The Engine: text in, text out, for one network and its tokenizer.

It owns what generation needs beyond the token loop: encoding and checking prompts, batching those
of equal length, stop strings, and the compiled decode step (``compiled.py``), memoised per batch
size for as long as the weights stay as they were (checked by each tensor's version counter, not
by hashing the weights: the disk cache's name is hashed once per set of weights).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from craft.errors import CraftError, CraftWarning, note
from craft.generate.loop import Step, stream
from craft.private import tensor_version
from craft.sampling import SamplingConfig, cut_at_stop

MAX_BATCH = 64  # prompts generated together at most (each row has its own KV cache)


class Engine:
    def __init__(self, model: nn.Module, tokenizer, compiled: bool = False) -> None:
        """``model`` is a ``GPT``; ``tokenizer`` a craft ``Tokenizer``; ``compiled`` uses the
        compiled decode step on CPU where it can be built (else eager, with a warning)."""
        self.model = model
        self.tokenizer = tokenizer
        self.compiled = compiled
        self._steps: dict[int, Step | None] = {}
        self._weights: tuple | None = None  # the weights the memoised steps were compiled from

    def generate(self, prompts: list[str], sampling: SamplingConfig, compiled: bool | None = None) -> list[str]:
        """The new text after each prompt (prompts of equal token length run as one batch; a
        batch draws from one generator seeded with ``sampling.seed``). ``compiled=False`` forces
        eager generation (samples during training: the weights change every step)."""
        config = self.model.config
        sampling = sampling.for_vocab(config.vocab_size)
        encoded = [self._encode(p, config.block_size) for p in prompts]
        texts: list[str] = [""] * len(prompts)
        groups: dict[int, list[int]] = {}
        for i, ids in enumerate(encoded):
            groups.setdefault(len(ids), []).append(i)
        use_compiled = self.compiled if compiled is None else compiled
        was_training = self.model.training
        self.model.eval()
        try:
            for rows in groups.values():
                for start in range(0, len(rows), MAX_BATCH):
                    chunk = rows[start : start + MAX_BATCH]
                    new = self._run([encoded[i] for i in chunk], sampling, use_compiled)
                    for i, text in zip(chunk, new, strict=True):
                        texts[i] = text
        finally:
            self.model.train(was_training)
        return texts

    def _encode(self, prompt: str, block_size: int) -> list[int]:
        if not prompt:
            raise CraftError("prompt is empty; give at least one character")
        ids = self.tokenizer.encode(prompt)
        if len(ids) > block_size:
            warnings.warn(
                f"prompt has {len(ids)} tokens, more than the context of {block_size}; only its last tokens are used",
                CraftWarning,
                stacklevel=4,
            )
        return ids

    def _run(self, rows: list[list[int]], sampling: SamplingConfig, compiled: bool) -> list[str]:
        device = next(self.model.parameters()).device
        idx = torch.tensor(rows, dtype=torch.long, device=device)
        generator = torch.Generator(device=device).manual_seed(sampling.seed)
        new: list[list[int]] = [[] for _ in rows]
        done = [False] * len(rows)

        def stop(column: torch.Tensor) -> bool:
            for r, t in enumerate(column[:, 0].tolist()):
                if not done[r]:
                    new[r].append(t)
                    done[r] = bool(sampling.stop) and cut_at_stop(self.tokenizer.decode(new[r]), sampling.stop)[1]
            return all(done)

        step = self._step(len(rows)) if compiled else None
        for _ in stream(self.model, idx, sampling, generator, step=step, stop=stop):
            pass
        return [cut_at_stop(self.tokenizer.decode(ids), sampling.stop)[0] for ids in new]

    def _step(self, batch_size: int) -> Step | None:
        """The compiled decode step for the current weights and this batch size, or None where it
        cannot be used (not on CPU, no C++ compiler, a part torch.export cannot trace)."""
        if next(self.model.parameters()).device.type != "cpu":
            warnings.warn("compiled_decode runs on CPU only; generating with eager PyTorch", CraftWarning, stacklevel=4)
            return None
        weights = tuple(tensor_version(t) for t in self.model.state_dict().values())
        if weights != self._weights:
            self._steps.clear()
            self._weights = weights
        if batch_size not in self._steps:
            self._steps[batch_size] = self._compile(batch_size)
        return self._steps[batch_size]

    def _compile(self, batch_size: int) -> Step | None:
        from craft.generate.compiled import compile_step, package_path

        path = package_path(self.model, batch_size)
        if not path.exists():
            note(f"compiling the decode step for these weights into {path} (once per checkpoint)")
        try:
            return compile_step(self.model, batch_size, path=path)
        except Exception as e:  # no C++ compiler, an unsupported part: eager still works
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            warnings.warn(
                f"compiled_decode: could not compile the decode step ({reason[:300]}); generating with "
                "eager PyTorch. Set --model.compiled_decode false to skip the attempt",
                CraftWarning,
                stacklevel=5,
            )
            return None
