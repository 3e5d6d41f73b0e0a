"""`python -m craft {fit,validate,test,predict}`: LightningCLI wired to craft's model and data."""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from craft.callbacks import (
    CraftCheckpoint,
    CraftProgressBar,
    GracefulStop,
    LoggingStepSync,
    RunSummary,
    SampleGeneration,
    SampleWriter,
    StopRequested,
    TokenThroughput,
)
from craft.checkpoint import PART_FIELDS, read_checkpoint
from craft.data import TextDataModule
from craft.data.tokenizers import Tokenizer, class_path
from craft.errors import CraftError, CraftWarning
from craft.module import ARCHITECTURE_FIELDS, LanguageModel


def checkpoint_dir(log_dir: str, experiment: str) -> Path:
    return Path(log_dir) / experiment / "checkpoints"


class CraftSaveConfig(SaveConfigCallback):
    """Save the resolved config with the run, for `fit` only (predict/validate must not touch it)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            super().setup(trainer, pl_module, stage)


def _debug() -> bool:
    return any(os.environ.get(v, "") not in ("", "0", "false") for v in ("CRAFT_DEBUG", "JSONARGPARSE_DEBUG"))


class CraftArgumentParser(LightningArgumentParser):
    """Config and command-line mistakes as one line (the key and what was wrong), not a usage dump."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error or _debug():
            return super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write(f"craft: error: {' '.join(message.split())} (options: {prog} --help)\n")
        sys.exit(2)


class CraftCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            LanguageModel,
            TextDataModule,
            save_config_callback=CraftSaveConfig,
            # Resuming writes into the same run folder; a fresh run there is refused earlier.
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            parser_class=CraftArgumentParser,
            parser_kwargs={"prog": "python -m craft"},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--experiment", type=str, default="default", help="Run name: logs/<experiment>/ holds its files."
        )
        parser.add_argument("--log_dir", type=str, default="logs", help="Folder that holds every experiment.")
        parser.add_lightning_class_args(CraftCheckpoint, "checkpoint")
        parser.add_lightning_class_args(SampleGeneration, "samples")
        parser.add_lightning_class_args(TokenThroughput, "throughput")
        parser.link_arguments(
            ("log_dir", "experiment"), "checkpoint.dirpath", compute_fn=lambda d, e: str(checkpoint_dir(d, e))
        )
        parser.link_arguments("data.block_size", "model.block_size")
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")

    # -- checkpoint path: resolve `last`, never start fresh silently, rebuild the architecture --

    _resume_step = 0
    _checkpoint_tokenizer: dict[str, Any] | None = None

    def _parse_ckpt_path(self) -> None:
        sub = self.config.get("subcommand")
        if not sub:
            return
        cfg = self.config[sub]
        folder = checkpoint_dir(cfg.log_dir, cfg.experiment)
        if "weights_only" in cfg and cfg.weights_only is None:
            cfg.weights_only = True  # checkpoints hold only tensors and primitives: never unpickle code
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path is None:
            if sub == "fit" and (folder / "last.ckpt").exists():
                raise CraftError(
                    f"experiment {cfg.experiment!r} already has checkpoints in {folder}; resume with "
                    "--ckpt_path last, or pick a new --experiment name (nothing was overwritten)"
                )
            return
        if ckpt_path == "last":
            path = folder / "last.ckpt"
            if not path.is_file():
                raise CraftError(
                    f"--ckpt_path last: no last.ckpt in {folder} (experiment {cfg.experiment!r}); "
                    "check --experiment/--config, or start a fresh run without --ckpt_path"
                )
        elif ckpt_path in ("best", "hpc", "registry"):
            raise CraftError(f"--ckpt_path {ckpt_path} is not supported by craft: use 'last' or a file path")
        else:
            path = Path(ckpt_path)
        # Names in the checkpoint resolve only to built-in parts or to what this config names itself.
        tokenizer = cfg.data.get("tokenizer")
        trusted = {f: cfg.model.get(f) for f in PART_FIELDS}
        trusted["tokenizer"] = tokenizer.get("class_path") if isinstance(tokenizer, Namespace) else None
        checkpoint = read_checkpoint(path, trusted, weights_only=cfg.get("weights_only") is not False)
        cfg.ckpt_path = str(path)
        hparams = checkpoint["hyper_parameters"]
        self._checkpoint_tokenizer = checkpoint["tokenizer"]
        if sub == "fit":
            self._resume_step = int(checkpoint.get("global_step", 0))
            print(f"craft: resuming {cfg.experiment!r} from {path} at global step {self._resume_step}", flush=True)
            wrong = [
                f"model.{f}: checkpoint {hparams[f]} vs config {cfg.model.get(f)}"
                for f in ARCHITECTURE_FIELDS
                if f != "vocab_size" and f in hparams and cfg.model.get(f) != hparams[f]
            ]
            if wrong:
                raise CraftError(
                    f"cannot resume from {path}: its architecture differs from the config ({'; '.join(wrong)}); "
                    "use the run's original config"
                )
        else:
            # validate/test/predict rebuild the checkpoint's network; generation settings stay the config's.
            for f in ARCHITECTURE_FIELDS:
                if f in hparams and f != "vocab_size":
                    cfg.model[f] = hparams[f]
            cfg.data.block_size = hparams["block_size"]
            # The checkpoint's tokenizer, as the config entry that rebuilds it: no corpus needed.
            state = checkpoint["tokenizer"]
            cfg.data.tokenizer = Namespace(
                class_path=class_path(Tokenizer.class_of(state)), init_args=Namespace(**Tokenizer.init_args_of(state))
            )

    def instantiate_trainer(self, **kwargs: Any):
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        trainer_init = self._get(self.config_init, "trainer")
        fitting = self.subcommand in (None, "fit")
        extra: list = [LoggingStepSync(), SampleWriter(), RunSummary()]
        if cfg.trainer.get("logger") in (None, True):
            if fitting:
                # version="" keeps one folder per experiment, so a resume continues its event stream;
                # purge_step makes TensorBoard drop steps the interrupted run logged after its last
                # checkpoint (they are trained again), so the curve has no overlap.
                extra_kw = {"purge_step": self._resume_step} if self._resume_step else {}
                kwargs["logger"] = TensorBoardLogger(
                    save_dir=cfg.log_dir, name=cfg.experiment, version="", default_hp_metric=False, **extra_kw
                )
            else:
                kwargs["logger"] = False  # validate/test/predict print results and never touch a run's logs
        if fitting:
            extra.append(GracefulStop())
        if fitting and kwargs.get("logger", cfg.trainer.get("logger")) is not False:
            extra.append(LearningRateMonitor(logging_interval="step"))
        if cfg.trainer.get("enable_progress_bar") is not False:
            extra.append(CraftProgressBar())
        user = trainer_init.get("callbacks") or []
        trainer_init["callbacks"] = [*(user if isinstance(user, list) else [user]), *extra]
        trainer = super().instantiate_trainer(**kwargs)
        # A run shorter than the logging interval would have no training curve at all.
        if 0 < trainer.max_steps < 2 * trainer.log_every_n_steps:
            trainer.log_every_n_steps = max(1, trainer.max_steps // 10)
        return trainer

    def after_instantiate_classes(self) -> None:
        saved = self._checkpoint_tokenizer
        if saved is not None and self.subcommand == "fit":
            tokenizer = self.datamodule.tokenizer
            if tokenizer.state() != saved:
                theirs = Tokenizer.from_state(saved)
                raise CraftError(
                    f"cannot resume: the {tokenizer.describe()} built from {self.datamodule.path} "
                    f"differs from the checkpoint's {theirs.describe()}; resume on the original corpus "
                    "and tokenizer settings"
                )


def _exit_after_signal(code: int, message: str) -> None:
    """Exit 128 + signal number. Lightning has already closed the logs and written last.ckpt; skipping
    interpreter shutdown (which resets signal handlers) keeps a second Ctrl-C from killing us mid-exit."""
    print(message, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    if threading.current_thread() is threading.main_thread():
        os._exit(code)
    sys.exit(code)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, CraftWarning):
        print(f"craft: warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main(args: list[str] | None = None) -> None:
    debug = _debug()
    warnings.showwarning = _show_warning
    # craft refuses a fresh run into a folder with checkpoints, so this warning only ever means a resume.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    try:
        cli = CraftCLI(args=args)
    except KeyboardInterrupt:  # before training started (or after it ended): nothing to save
        print("craft: interrupted", file=sys.stderr)
        sys.exit(130)
    except (StopRequested, SIGTERMException) as e:
        signum = getattr(e, "signum", signal.SIGTERM)
        _exit_after_signal(
            128 + signum, f"craft: stopped by {signal.Signals(signum).name}; resume with --ckpt_path last"
        )
    except CraftError as e:
        if debug:
            raise
        print(f"craft: error: {e}", file=sys.stderr)
        sys.exit(2)
    trainer = getattr(cli, "trainer", None)
    stop = next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, GracefulStop)), None)
    if stop is not None and stop.exit_code is not None:
        _exit_after_signal(
            stop.exit_code, f"craft: stopped at global step {trainer.global_step}; resume with --ckpt_path last"
        )
