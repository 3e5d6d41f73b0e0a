"""Checkpointing: top-k by validation loss plus a `last.ckpt` that is always the newest step,
every file written atomically (temp file in the same folder, fsync, rename)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from craft.errors import ConfigError, CraftError

LAST = "last.ckpt"
TMP_MARK = ".tmp-"


def write_bytes_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to ``.<name>.tmp-<pid>`` beside it, fsync, then rename over the old one.

    A crash or kill at any moment leaves either the old or the new file, never a torn one; a
    failed write (disk full, no permission) raises an error naming the path and keeps the old file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options=None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_durably(tmp, buffer.getvalue())
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # make the rename itself durable
            finally:
                os.close(dir_fd)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            kept = " (the previous checkpoint there is kept)" if path.exists() else ""
            raise CraftError(f"could not save checkpoint {path}: {e.strerror or e}{kept}") from None


def remove_stray_temp_files(folder: Path) -> list[Path]:
    """Temp files of saves that were killed mid-write: safe to delete, the rename never happened."""
    stray = [p for p in folder.glob(f".*{TMP_MARK}*") if p.is_file()] if folder.is_dir() else []
    for p in stray:
        p.unlink(missing_ok=True)
    return stray


class CraftCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that keeps the best ``save_top_k`` by ``val/loss`` (saved when validation
    ends, so a file's name always matches its own validation) and, independently, rewrites
    ``last.ckpt`` every ``last_every_n_steps``, after each validation and when training ends.

    ``last.ckpt`` is a regular file, so copying a run folder copies a loadable checkpoint. All
    writes go through :class:`AtomicCheckpointIO`.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "step{step:07d}-val_loss{val/loss:.4f}",
        monitor: str = "val/loss",
        save_top_k: int = 3,
        last_every_n_steps: int = 250,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            dirpath: Checkpoint folder (set from the experiment name by the CLI).
            filename: Name pattern of the top-k files.
            monitor: Metric that ranks the top-k files.
            save_top_k: How many of the best checkpoints to keep (0: only last.ckpt).
            last_every_n_steps: Rewrite last.ckpt every this many optimizer steps (0: only after
                validation and at the end).
        """
        if kwargs.get("every_n_train_steps") is not None:  # Lightning's argument: top-k files between validations
            raise ConfigError(
                "checkpoint.every_n_train_steps is not used by craft: last.ckpt is rewritten every "
                "checkpoint.last_every_n_steps, and the best files are saved when validation ends"
            )
        # "val/loss=" in a file name would create a folder; the pattern names the metrics itself.
        kwargs["auto_insert_metric_name"] = False
        kwargs.setdefault("mode", "min")
        super().__init__(
            dirpath=dirpath, filename=filename, monitor=monitor, save_top_k=save_top_k, save_last=False, **kwargs
        )
        self.last_every_n_steps = last_every_n_steps
        self._last_written_step = -1

    @property
    def last_path(self) -> str:
        assert self.dirpath is not None
        return os.path.join(self.dirpath, LAST)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
                trainer.strategy.checkpoint_io = AtomicCheckpointIO()
            if trainer.is_global_zero and self.dirpath:
                remove_stray_temp_files(Path(self.dirpath))

    def write_last(self, trainer: L.Trainer, again: bool = False) -> None:
        """Rewrite last.ckpt; ``again`` rewrites even at the step already written (after validation,
        so the file also holds that validation's results)."""
        if trainer.sanity_checking or (trainer.global_step == self._last_written_step and not again):
            return
        bad = [n for n, p in trainer.lightning_module.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise CraftError(
                f"non-finite weights at global step {trainer.global_step} (first: {bad[0]}); "
                f"{self.last_path} was not overwritten. Lower lr or check the data"
            )
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
