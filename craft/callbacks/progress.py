"""Progress bar with tokens/s and an ETA for the whole run, and the end-of-run summary."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from craft.callbacks.checkpoint import CraftCheckpoint
from craft.callbacks.throughput import TokenThroughput


def _find(trainer: L.Trainer, kind: type) -> Any:
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class CraftProgressBar(TQDMProgressBar):
    """TQDM bar that adds tokens/s and the time left for the whole run (all epochs/steps)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._run_start = (time.perf_counter(), trainer.global_step)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        monitor = _find(trainer, TokenThroughput)
        if monitor is not None and "train/tokens_per_sec" in monitor.latest:
            metrics["tok/s"] = f"{monitor.latest['train/tokens_per_sec']:,.0f}"
        start = getattr(self, "_run_start", None)
        total = trainer.estimated_stepping_batches if trainer.training else math.inf
        if start is not None and math.isfinite(total):
            done = trainer.global_step - start[1]
            if done > 0:
                per_step = (time.perf_counter() - start[0]) / done
                metrics["eta"] = _format_seconds(per_step * max(0, total - trainer.global_step))
        return metrics


class RunSummary(L.Callback):
    """At the end of `fit`: print a short summary, save it as ``summary.json`` in the run folder,
    and record the final metrics with the hyperparameters (TensorBoard's HPARAMS tab)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._start_step: int | None = None  # set in on_train_start, which a finished run never reaches

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start_step = trainer.global_step  # restored by now when resuming

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir  # a broadcast from rank 0 under DDP: every process must ask
        if trainer.is_global_zero:
            self.write(trainer, pl_module, log_dir)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, log_dir: str | None) -> None:
        summary = self.summary(trainer, pl_module)
        lines = [f"  {k}: {v}" for k, v in summary.items()]
        print("\ncraft run summary\n" + "\n".join(lines), flush=True)
        if self._start_step is None:  # on_train_start never came: nothing was left to train
            print(
                f"craft: no training steps ran: the run had already reached its end (step {trainer.global_step}); "
                "raise --trainer.max_steps or --trainer.max_epochs to train on from it",
                flush=True,
            )
        if self._start_step is None or trainer.global_step == self._start_step:
            return  # nothing trained in this launch: the run's summary.json stays as it was
        if log_dir:
            path = Path(log_dir) / "summary.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(summary, indent=2) + "\n")
        final = {
            f"hp/{k}": summary[k]
            for k in ("val_loss", "val_bpc", "train_loss", "mean_tokens_per_sec")
            if isinstance(summary.get(k), float)
        }
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and final:
                logger.log_hyperparams(dict(pl_module.hparams), final)

    def summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        m = trainer.callback_metrics

        def metric(name: str) -> float | None:
            return round(float(m[name]), 4) if name in m else None

        start_step = trainer.global_step if self._start_step is None else self._start_step
        out: dict[str, Any] = {
            "experiment": getattr(trainer.logger, "name", None),
            "global_step": trainer.global_step,
            "steps_this_launch": trainer.global_step - start_step,
            "wall_seconds": round(time.perf_counter() - self._start, 1),
            "params": pl_module.model.num_params(),
            "train_loss": metric("train/loss_epoch") or metric("train/loss_step"),
            "val_loss": metric("val/loss"),
            "val_bpc": metric("val/bpc"),
            "val_ppl": metric("val/ppl"),
        }
        monitor = _find(trainer, TokenThroughput)
        if monitor is not None:
            totals = monitor.train_totals()
            out["tokens_seen"] = monitor.tokens_seen
            rate = totals.get("mean_tokens_per_sec")
            out["mean_tokens_per_sec"] = round(rate, 1) if rate else None
            if rate and monitor.available_flops:
                out["mean_mfu"] = round(rate * pl_module.model.flops_per_token() / monitor.available_flops, 4)
                out["peak_flops"] = round(monitor.available_flops)
                out["peak_flops_source"] = monitor.peak_source
        ckpt = _find(trainer, CraftCheckpoint)
        if ckpt is not None:
            out["last_checkpoint"] = ckpt.last_model_path or None
            out["best_checkpoint"] = ckpt.best_model_path or None
        return out
