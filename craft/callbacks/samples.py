"""Watch the model learn to write: generated text every N steps, in TensorBoard and the console."""

from __future__ import annotations

import re
import time

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from craft.callbacks.throughput import TokenThroughput
from craft.sampling import SamplingConfig
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
        sampling: SamplingConfig = SamplingConfig(),
        at_end: bool = True,
    ) -> None:
        """
        Args:
            every_n_steps: Sample every this many optimizer steps (0: never during training).
            prompts: Prompts to continue (default: the first `prompt_chars` characters of the validation text).
            prompt_chars: Length of the default prompt taken from the validation text.
            sampling: How samples are drawn (craft/sampling.py; its fixed seed makes samples at
                different steps comparable). Validated when the run starts, not mid-run.
            at_end: Also sample when training ends.
        """
        super().__init__()
        self.every_n_steps = every_n_steps
        self.prompts = prompts
        self.prompt_chars = prompt_chars
        self.sampling = SamplingConfig.of(sampling)
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
        prompts = self._prompts(trainer, pl_module)
        results = list(zip(prompts, pl_module.generate_all(prompts, self.sampling), strict=True))
        for i, (prompt, text) in enumerate(results):
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
