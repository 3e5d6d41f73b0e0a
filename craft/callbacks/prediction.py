"""Stream `predict` output: print each sample and append it to a file in the checkpoint's run folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter


class SampleWriter(BasePredictionWriter):
    """Prints generated text as each batch finishes and saves it to
    ``<run>/samples/predict-<time>.txt`` (``<run>`` is the folder above the checkpoint's)."""

    def __init__(self, output_dir: str | None = None) -> None:
        """
        Args:
            output_dir: Folder for the sample file (default: the checkpoint's run folder).
        """
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.path: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.output_dir:
            folder = Path(self.output_dir)
        elif trainer.ckpt_path:
            folder = Path(trainer.ckpt_path).resolve().parent.parent / "samples"
        else:
            folder = None
        if folder is not None and trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            self.path = folder / time.strftime("predict-%Y%m%d-%H%M%S.txt")

    def write_on_batch_end(
        self, trainer, pl_module, prediction: Any, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        if not trainer.is_global_zero:
            return
        for item in prediction:
            block = f"--- prompt: {item['prompt']!r}\n{item['prompt']}{item['text']}\n"
            print(block, flush=True)
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(block + "\n")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.path is not None and trainer.is_global_zero:
            print(f"craft: samples saved to {self.path}", file=sys.stderr, flush=True)
