"""Tokens/s and MFU from real token counts, on any device (a measured peak FLOP/s on CPU)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn


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


class TokenThroughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor set up for language models.

    Logs ``train/tokens_per_sec`` and ``train/mfu`` every logging step (over the last
    ``window_size`` batches), ``val/tokens_per_sec`` per validation, and keeps totals for the run
    summary. MFU needs the device's peak FLOP/s: ``peak_flops`` if given, else Lightning's table for
    known GPUs, else (CPU) a short matmul probe at start, logged as ``hardware/peak_flops``.
    """

    def __init__(self, window_size: int = 20, peak_flops: float | None = None) -> None:
        """
        Args:
            window_size: Batches the tokens/s and MFU rates are averaged over.
            peak_flops: Peak FLOP/s of one device for MFU (default: known GPU table, or measured on CPU).
        """
        super().__init__(batch_size_fn=batch_windows, length_fn=batch_tokens, window_size=window_size)
        self.peak_flops = peak_flops
        self.peak_source = "config"
        self.tokens_seen = 0  # all launches of the run (saved in checkpoints)
        self.latest: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        peak = self.peak_flops
        device = trainer.strategy.root_device
        if peak is None and self.available_flops:
            peak, self.peak_source = self.available_flops, "lightning table"
        if peak is None and device.type == "cpu":
            peak, self.peak_source = measure_peak_flops(device), "measured matmul"
        if peak is None:
            rank_zero_warn(f"no peak FLOP/s known for {device}; pass --throughput.peak_flops to log MFU")
        self.available_flops = peak
        for t in self._throughputs.values():
            t.available_flops = peak
        if peak and stage == "fit":
            rank_zero_info(f"craft: peak {peak / 1e9:.1f} GFLOP/s per device ({self.peak_source}) for MFU")

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_start(trainer, *args)
        if self.available_flops and trainer.logger is not None:
            trainer.logger.log_metrics({"hardware/peak_flops": self.available_flops}, step=trainer.global_step)

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` spent on something else (e.g. sample generation) out of the training rate."""
        if RunningStage.TRAINING in self._t0s:
            self._t0s[RunningStage.TRAINING] += seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.tokens_seen += batch_tokens(batch) * trainer.world_size
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _compute(self, trainer: L.Trainer, iter_num: int | None = None) -> None:
        stage = trainer.state.stage
        # Validation gets one rate per pass (on_validation_end), not a rate per batch.
        if stage != RunningStage.TRAINING or not trainer._logger_connector.should_update_logs:
            return
        metrics = self._throughputs[stage].compute()
        renamed = {"tokens_per_sec": metrics.get("device/items_per_sec"), "mfu": metrics.get("device/mfu")}
        out = {f"train/{k}": v for k, v in renamed.items() if v is not None}
        self.latest.update(out)
        if out:
            trainer._logger_connector.log_metrics(out, step=iter_num)

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_validation_end(trainer, *args)
        t = self._throughputs.get(RunningStage.VALIDATING)
        if trainer.sanity_checking or t is None or not t._time or t._time[-1] <= 0:
            return
        rate = self._lengths[RunningStage.VALIDATING] / t._time[-1]
        self.latest["val/tokens_per_sec"] = rate
        if trainer.logger is not None:
            trainer.logger.log_metrics({"val/tokens_per_sec": rate}, step=trainer.global_step)

    # Prediction batches are prompts (strings), not token windows: nothing to count there.
    def on_predict_start(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_predict_batch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def train_totals(self) -> dict[str, float]:
        """Tokens and seconds of training (validation excluded) in this launch, and mean rates."""
        t = self._throughputs.get(RunningStage.TRAINING)
        seconds = t._time[-1] if t is not None and t._time else 0.0
        tokens = self._lengths.get(RunningStage.TRAINING, 0)
        out = {"train_seconds": seconds, "train_tokens_this_launch": tokens}
        if seconds > 0:
            out["mean_tokens_per_sec"] = tokens / seconds
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"tokens_seen": self.tokens_seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tokens_seen = int(state_dict.get("tokens_seen", 0))
