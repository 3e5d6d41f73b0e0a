"""Watch the model learn to write: generated text every N steps, in TensorBoard and the console."""

from __future__ import annotations

import re
import time

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from craft.callbacks.throughput import TokenThroughput
from craft.generation import SamplingConfig
from craft.trackers import log_sample


def markdown_code_block(text: str) -> str:
    """Fence ``text`` so TensorBoard's markdown keeps newlines, `*` and `_` as written.

    The fence is longer than any run of backticks inside the text, so it cannot be closed early.
    """
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


class SampleGeneration(L.Callback):
    """Generate from fixed prompts every ``every_n_steps`` optimizer steps and when training ends.

    Runs on rank 0, in eval mode without gradients, with its own seeded generator: the training
    random stream and the model's train/eval state are exactly as before.
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        prompts: list[str] | None = None,
        prompt_chars: int = 32,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = 200,
        top_p: float = 1.0,
        seed: int = 1234,
        at_end: bool = True,
    ) -> None:
        """
        Args:
            every_n_steps: Sample every this many optimizer steps (0: never during training).
            prompts: Prompts to continue (default: the first `prompt_chars` characters of the validation text).
            prompt_chars: Length of the default prompt taken from the validation text.
            max_new_tokens: Tokens generated per prompt.
            temperature: Sampling temperature (0: greedy).
            top_k: Sample among the k most likely tokens (null: all).
            top_p: Nucleus sampling mass.
            seed: Seed of the sampling generator, so samples at different steps are comparable.
            at_end: Also sample when training ends.
        """
        super().__init__()
        SamplingConfig(temperature, top_k, top_p, max_new_tokens)  # bad settings fail at start, not mid-run
        self.every_n_steps = every_n_steps
        self.prompts = prompts
        self.prompt_chars = prompt_chars
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.seed = seed
        self.at_end = at_end
        self.active = False  # True while generating (the stop handler reports it)
        self._last_step = -1

    def _prompts(self, trainer: L.Trainer, pl_module) -> list[str]:
        if self.prompts:
            return self.prompts
        dm = trainer.datamodule
        tokenizer = pl_module.tokenizer
        if dm is None or getattr(dm, "val_ids", None) is None or tokenizer is None:
            return ["\n"]
        text = tokenizer.decode(dm.val_ids[: self.prompt_chars].tolist())
        return [text[: self.prompt_chars]]

    @torch.no_grad()
    def sample(self, trainer: L.Trainer, pl_module) -> list[tuple[str, str]]:
        step = trainer.global_step
        self._last_step = step
        if not trainer.is_global_zero:
            return []
        start = time.perf_counter()
        self.active = True
        try:
            results = self._generate_all(trainer, pl_module, step)
        finally:
            self.active = False
        for callback in trainer.callbacks:
            if isinstance(callback, TokenThroughput) and trainer.training:
                callback.exclude(time.perf_counter() - start)
        return results

    def _generate_all(self, trainer: L.Trainer, pl_module, step: int) -> list[tuple[str, str]]:
        results = []
        for i, prompt in enumerate(self._prompts(trainer, pl_module)):
            text = pl_module.generate(
                prompt,
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                top_k=self.top_k,
                top_p=self.top_p,
                seed=self.seed + i,
            )
            results.append((prompt, text))
            print(f"\n--- sample at step {step} (prompt {prompt!r}):\n{prompt}{text}\n---", flush=True)
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_text(f"samples/{i}", markdown_code_block(prompt + text), step)
                else:
                    log_sample(logger, i, prompt, text, step)
        return results

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = self.every_n_steps
        if n and trainer.global_step % n == 0 and trainer.global_step != self._last_step:
            self.sample(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_end and trainer.global_step != self._last_step:
            self.sample(trainer, pl_module)
