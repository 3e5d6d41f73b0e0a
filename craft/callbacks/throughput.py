"""Tokens/s and MFU from real token counts, on any device (a measured peak FLOP/s on CPU)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops
from lightning.pytorch.utilities import rank_zero_warn

from craft.errors import ConfigError, note


def batch_windows(batch: Any) -> int:
    return batch[0].size(0)


def batch_tokens(batch: Any) -> int:
    return batch[0].numel()


def measure_peak_flops(
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seconds: float = 1.0,
    sizes: tuple[int, ...] = (512, 1024, 1536),
) -> float:
    """FLOP/s of a square matmul on ``device``: the practical ceiling MFU is measured against.

    Takes the best of ``sizes``, each timed for about ``seconds / len(sizes)`` after a warm-up (the
    best, because a busy moment on a small machine only ever makes a probe slower).
    """
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b  # warm-up
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / len(sizes):
            a @ b
            reps += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def compute_dtype(precision: str) -> torch.dtype:
    """The matmul dtype of a Trainer ``precision`` setting ("bf16-mixed", "16-true", "32", ...)."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float32


class TokenThroughput(L.Callback):
    """Tokens/s and MFU of training, on Lightning's public ``Throughput`` (rolling window).

    Logs ``train/tokens_per_sec`` and ``train/mfu`` every logging step (over the last
    ``window_size`` batches, through ``pl_module.log``), ``val/tokens_per_sec`` per validation, and
    keeps totals for the run summary. At each validation it also logs ``time/train_seconds``: the
    seconds spent training so far, over every launch of the run, validation and sample generation
    excluded (modded-nanogpt's speedrun clock, which stops while it validates). MFU needs the device's
    peak FLOP/s: ``peak_flops`` if given, else Lightning's table for known GPUs, else (CPU) a short
    matmul probe, logged as ``hardware/peak_flops``. All of this happens in ``fit`` only.
    """

    def __init__(self, window_size: int = 20, peak_flops: float | None = None) -> None:
        """
        Args:
            window_size: Batches the tokens/s and MFU rates are averaged over (at least 2).
            peak_flops: Peak FLOP/s of one device for MFU (default: known GPU table, or measured on CPU).
        """
        if window_size < 2:
            raise ConfigError(f"throughput.window_size must be at least 2, got {window_size}")
        self.window_size = window_size
        self.peak_flops = peak_flops
        self.peak_source = "config"
        self.available_flops: float | None = None
        self.tokens_seen = 0  # all launches of the run (saved in checkpoints)
        self.train_seconds = 0.0  # training seconds of earlier launches (saved in checkpoints)
        self.latest: dict[str, float] = {}
        self._train: Throughput | None = None
        self._excluded = 0.0
        self._trained = 0.0  # training seconds of this launch, at the end of its latest batch

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return  # no FLOP probe for validate/test/predict: MFU is reported for training only
        device = trainer.strategy.root_device
        peak = self.peak_flops
        if peak is None:
            peak = get_available_flops(device, compute_dtype(str(trainer.precision)))
            self.peak_source = "lightning table"
        if peak is None and device.type == "cpu":
            peak, self.peak_source = measure_peak_flops(device), "measured matmul"
        if peak is None:
            rank_zero_warn(f"no peak FLOP/s known for {device}; pass --throughput.peak_flops to log MFU")
        self.available_flops = peak
        if peak:
            note(f"peak {peak / 1e9:.1f} GFLOP/s per device ({self.peak_source}) for MFU")

    def _now(self, trainer: L.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)  # time what the GPU did, not what was queued
        return time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train = Throughput(available_flops=self.available_flops, window_size=self.window_size)
        self._batches = self._windows = self._tokens = 0
        self._excluded = self._trained = 0.0
        self._t0 = self._now(trainer)
        if self.available_flops and trainer.logger is not None and trainer.is_global_zero:
            trainer.logger.log_metrics({"hardware/peak_flops": self.available_flops}, step=trainer.global_step)

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` spent on something else (e.g. sample generation) out of the training rate."""
        self._excluded += seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        tokens = batch_tokens(batch)
        self.tokens_seen += tokens * trainer.world_size
        self._batches += 1
        self._windows += batch_windows(batch)
        self._tokens += tokens
        flops = getattr(pl_module, "flops_per_batch", None)
        self._trained = self._now(trainer) - self._t0 - self._excluded
        self._train.update(
            time=self._trained,
            batches=self._batches,
            samples=self._windows,
            lengths=self._tokens,
            flops=flops,
        )
        metrics = self._train.compute()
        out = {"train/tokens_per_sec": metrics.get("device/items_per_sec"), "train/mfu": metrics.get("device/mfu")}
        out = {k: float(v) for k, v in out.items() if v is not None}
        self.latest.update(out)
        for name, value in out.items():
            pl_module.log(name, value, on_step=True, on_epoch=False)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_tokens, self._val_t0 = 0, self._now(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._val_tokens += batch_tokens(batch)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = self._now(trainer) - self._val_t0
        if trainer.sanity_checking or trainer.state.fn != "fit" or seconds <= 0 or not self._val_tokens:
            return
        rate = self._val_tokens / seconds
        self.latest["val/tokens_per_sec"] = rate
        self._excluded += seconds  # validation inside a training epoch is not training time
        if trainer.logger is not None and trainer.is_global_zero:
            trainer.logger.log_metrics({"val/tokens_per_sec": rate}, step=trainer.global_step)
            # At the step val/bpc carries (Lightning's index of the last optimizer step), so a curve
            # pairs the two by step.
            trained = self.train_seconds + self._trained  # validation runs between batches
            trainer.logger.log_metrics({"time/train_seconds": trained}, step=trainer.global_step - 1)

    def train_totals(self) -> dict[str, float]:
        """Tokens and seconds of training (validation excluded) in this launch, and mean rates."""
        metrics = self._train.compute() if self._train is not None and self._batches else {}
        seconds, tokens = metrics.get("time", 0.0), metrics.get("lengths", 0)
        out = {"train_seconds": seconds, "train_tokens_this_launch": tokens}
        if seconds > 0:
            out["mean_tokens_per_sec"] = tokens / seconds
        return out

    def state_dict(self) -> dict[str, Any]:
        # Checkpoints are written between batches: the clock at the latest batch's end is the run's.
        return {"tokens_seen": self.tokens_seen, "train_seconds": self.train_seconds + self._trained}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tokens_seen = int(state_dict.get("tokens_seen", 0))
        self.train_seconds = float(state_dict.get("train_seconds", 0.0))
