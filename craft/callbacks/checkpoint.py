"""Checkpointing: top-k by validation loss plus a `last.ckpt` that is always the newest step."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

LAST = "last.ckpt"


class CraftCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps the best ``save_top_k`` by ``val/loss`` (saved when validation
    ends, so a file's name always matches its own validation) and, independently, rewrites
    ``last.ckpt`` every ``every_n_train_steps``, after each validation and when training ends.

    ``last.ckpt`` is a regular file, so copying a run folder copies a loadable checkpoint.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "step{step:07d}-val_loss{val/loss:.4f}",
        monitor: str = "val/loss",
        save_top_k: int = 3,
        every_n_train_steps: int = 250,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            dirpath: Checkpoint folder (set from the experiment name by the CLI).
            filename: Name pattern of the top-k files.
            monitor: Metric that ranks the top-k files.
            save_top_k: How many of the best checkpoints to keep (0: only last.ckpt).
            every_n_train_steps: Rewrite last.ckpt every this many optimizer steps.
        """
        # "val/loss=" in a file name would create a folder; the pattern names the metrics itself.
        kwargs["auto_insert_metric_name"] = False
        kwargs.setdefault("mode", "min")
        super().__init__(
            dirpath=dirpath, filename=filename, monitor=monitor, save_top_k=save_top_k, save_last=False, **kwargs
        )
        self.last_every_n_steps = every_n_train_steps
        self._last_written_step = -1

    @property
    def last_path(self) -> str:
        assert self.dirpath is not None
        return os.path.join(self.dirpath, LAST)

    def write_last(self, trainer: L.Trainer, again: bool = False) -> None:
        """Rewrite last.ckpt; ``again`` rewrites even at the step already written (after validation,
        so the file also holds that validation's results)."""
        if trainer.sanity_checking or (trainer.global_step == self._last_written_step and not again):
            return
        self.last_model_path = self.last_path
        self._last_written_step = trainer.global_step
        trainer.save_checkpoint(self.last_path, weights_only=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.last_every_n_steps
        if n and trainer.global_step % n == 0:
            self.write_last(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        super().on_validation_end(trainer, pl_module)
        if trainer.state.fn == "fit":
            self.write_last(trainer, again=True)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        self.write_last(trainer)
