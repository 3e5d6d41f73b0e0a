"""Ctrl-C and SIGTERM: finish the current step, write last.ckpt, exit 130 / 143."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import lightning as L

from craft.callbacks.checkpoint import CraftCheckpoint
from craft.callbacks.samples import SampleGeneration


class StopRequested(Exception):
    """Raised inside validation to end it early after a stop signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


class GracefulStop(L.Callback):
    """First SIGINT/SIGTERM: stop after the current training step (or abandon the current
    validation), write last.ckpt, and let the CLI exit with 128 + signal number. A second SIGINT
    ends the process at once; atomic checkpoint writes keep last.ckpt intact even then.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None

    @property
    def exit_code(self) -> int | None:
        return None if self.signum is None else 128 + self.signum

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            print("\ncraft: second Ctrl-C, aborting now", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        if self.signum is None:
            self.signum = signum
            name = signal.Signals(signum).name
            print(
                f"\ncraft: {name} received during {self._phase()}, stopping after this step and saving "
                "last.ckpt (Ctrl-C again to abort now)",
                file=sys.stderr,
                flush=True,
            )

    def _phase(self) -> str:
        trainer = self._trainer
        if trainer is None:
            return "training"
        if any(isinstance(c, SampleGeneration) and c.active for c in trainer.callbacks):
            return "sample generation"
        if trainer.sanity_checking:
            return "the sanity check"
        return "validation" if trainer.validating else "training"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.signum is not None:
            return  # stopping: keep our handler, so a second Ctrl-C while exiting still ends at once
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _save(self, trainer: L.Trainer, again: bool) -> None:
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, CraftCheckpoint):
                cb.write_last(trainer, again=again)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.signum is not None:
            self._save(trainer, again=True)
            trainer.should_stop = True

    def on_validation_batch_end(self, trainer, *args: Any, **kwargs: Any) -> None:
        if self.signum is not None and trainer.state.fn == "fit" and not trainer.sanity_checking:
            raise StopRequested(self.signum)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # StopRequested is ours; Lightning raises its own SIGTERMException at a batch boundary.
        if self.signum is not None:
            # Keep a checkpoint written right after this step's training (before validation); else
            # save the mid-validation state, whose validation Lightning reruns on resume.
            self._save(trainer, again=False)
