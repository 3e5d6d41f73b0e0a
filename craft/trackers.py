"""Experiment trackers beside TensorBoard: ``--tracker csv|mlflow|wandb`` (or a preset that sets it).

    python -m craft fit --config configs/quickstart.yaml --config configs/presets/mlflow.yaml

Each tracker is Lightning's own logger for it, made by craft so that it writes where the run lives:
named after ``--experiment``, its files under ``--log_dir`` (``tracker_uri`` overrides MLflow's
store, e.g. a server). Every tracker gets the same scalars (Lightning logs to all loggers), the full
resolved config (not only the model's hyperparameters) and, where it holds text, the samples. The
libraries are optional: a tracker whose library is missing is refused in one line that says what
to install.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger

from craft.errors import CraftError

TRACKERS = {"csv": None, "mlflow": "mlflow", "wandb": "wandb"}  # name -> the library it needs


def make_tracker(name: str, log_dir: str, experiment: str, uri: str | None = None) -> Logger:
    if name not in TRACKERS:
        raise CraftError(f"unknown tracker {name!r}: use one of {', '.join(TRACKERS)}")
    library = TRACKERS[name]
    if library and importlib.util.find_spec(library) is None:
        raise CraftError(f"tracker {name} needs the {library} package: pip install {library} (or craft[trackers])")
    root = Path(log_dir) / experiment
    if name == "csv":  # metrics.csv beside the run's other files
        return CSVLogger(save_dir=log_dir, name=experiment, version="csv")
    if name == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        store = uri or f"sqlite:///{(Path(log_dir) / 'mlflow.db').resolve()}"
        return MLFlowLogger(experiment_name=experiment, tracking_uri=store, artifact_location=str(root / "mlflow"))
    from lightning.pytorch.loggers import WandbLogger

    # Offline unless WANDB_MODE says otherwise: nothing leaves the machine by default; `wandb sync` uploads.
    return WandbLogger(name=experiment, project="craft", save_dir=str(root), offline=_wandb_offline())


def _wandb_offline() -> bool:
    return os.environ.get("WANDB_MODE", "offline") in ("offline", "dryrun", "disabled")


def log_config(logger: Logger, config: dict[str, Any], text: str) -> None:
    """The whole resolved config: as a YAML artifact (MLflow), the run's config (W&B)."""
    kind = type(logger).__name__
    if isinstance(logger, CSVLogger):  # beside its metrics.csv and hparams.yaml
        Path(logger.log_dir).mkdir(parents=True, exist_ok=True)
        (Path(logger.log_dir) / "config.yaml").write_text(text)
    elif kind == "MLFlowLogger":
        logger.experiment.log_text(logger.run_id, text, "config.yaml")
    elif kind == "WandbLogger":
        logger.experiment.config.update(config, allow_val_change=True)


def log_sample(logger: Logger, index: int, prompt: str, text: str, step: int) -> None:
    """One generated sample, where the tracker keeps text (TensorBoard is handled by the callback)."""
    kind = type(logger).__name__
    if kind == "MLFlowLogger":
        logger.experiment.log_text(logger.run_id, prompt + text, f"samples/step{step:07d}_{index}.txt")
    elif kind == "WandbLogger":
        logger.log_text(key=f"samples/{index}", columns=["step", "prompt", "text"], data=[[step, prompt, text]])
