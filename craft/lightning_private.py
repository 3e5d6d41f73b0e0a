"""The only module where craft touches Lightning's private names; tests/test_lightning_private.py
fails loudly when any of them changes. pyproject.toml bounds ``lightning`` below the next minor.

1. ``LightningCLI._parse_ckpt_path`` (Lightning >= 2.5.5) loads a ``--ckpt_path`` file's
   hyperparameters into the model config before any hook runs, checkpoint values winning over the
   command line (Lightning-AI/pytorch-lightning#20310; #21455 would flip the precedence). craft does
   its own checkpoint handling in the public ``before_instantiate_classes`` (``craft/cli.py``):
   generation settings come from the command line, the architecture from the checkpoint, and a
   checkpoint's names are checked before anything is imported (``craft/checkpoint.py``). So this
   merge is switched off.
2. ``fit_loop.epoch_loop._batches_that_stepped``: the step counter loggers use. Lightning restores
   it off by one for checkpoints saved at a validation or train end, so a resumed TensorBoard curve
   would skip or repeat a step. The closest upstream reports, about this counter on resume, are
   Lightning-AI/pytorch-lightning#12274 and #13163 (both closed; this off-by-one is still in 2.6).
   With one optimizer the counter always equals the global step.
"""

from __future__ import annotations

from typing import Any

import lightning as L


class NoCheckpointHparamsMerge:
    """Mixin for a LightningCLI subclass: leave ``--ckpt_path`` hyperparameters out of the config."""

    def _parse_ckpt_path(self) -> None:
        return None


class LoggingStepSync(L.Callback):
    """Keep a resumed run's TensorBoard x axis on the global step (see point 2 above).

    Sets the logging-step counter before anything logs the first batch: register it before other
    callbacks that log in ``on_train_batch_start`` (the CLI does).
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = trainer.ckpt_path is not None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if getattr(self, "_pending", False):
            trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step
            self._pending = False
