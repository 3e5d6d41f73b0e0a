"""`python -m craft {fit,validate,test,predict}`: LightningCLI wired to craft's model and data."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from typing import Any

from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from craft.callbacks import (
    CraftCheckpoint,
    CraftProgressBar,
    GracefulStop,
    RunSummary,
    SampleGeneration,
    SampleWriter,
    StopRequested,
    TokenThroughput,
)
from craft.checkpoint import (
    Checkpoint,
    check_experiment,
    check_steps_left,
    checkpoint_dir,
    use_checkpoint,
    use_init_from,
)
from craft.data import TextDataModule
from craft.data.tokenizers import Tokenizer
from craft.errors import ConfigError, CraftError, CraftWarning, NothingToDo
from craft.module import LanguageModel
from craft.private import LoggingStepSync, NoCheckpointHparamsMerge
from craft.trackers import log_config, make_tracker


class CraftSaveConfig(SaveConfigCallback):
    """Save the resolved config with the run, for `fit` only (predict/validate must not touch it).

    Written at ``on_fit_start``, not in ``setup``: a resume refused while Lightning restores the
    checkpoint (a changed batch order, ``TextDataModule.load_state_dict``) must leave the run's
    config.yaml as it was, since it is the record the refusal points to."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        pass

    def on_fit_start(self, trainer, pl_module) -> None:
        super().setup(trainer, pl_module, "fit")

    def save_config(self, trainer, pl_module, stage: str) -> None:
        """The whole resolved config to every tracker that keeps one (``craft/trackers.py``)."""
        text = self.parser.dump(self.config, skip_none=False)
        for logger in trainer.loggers:
            log_config(logger, self.config.as_dict(), text)


def prepare_vocab(data: TextDataModule) -> int:
    return data.prepare_vocab()


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


LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


def quiet_lightning() -> None:
    """For predict/validate/test: Lightning's banners ("GPU available ...", tips, "Restoring states")
    and warnings that are not about the user's request are not shown. ``CRAFT_DEBUG=1`` keeps them."""
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (r"No seed found", r"The dirpath has changed from"):
        warnings.filterwarnings("ignore", message=message)


class CraftCLI(NoCheckpointHparamsMerge, LightningCLI):
    """LightningCLI for craft. Checkpoint handling runs in ``before_instantiate_classes``; Lightning's
    own merge of checkpoint hyperparameters is off (``craft/private.py``)."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        self.resumed: Checkpoint | None = None  # the checkpoint of this command, once checked
        self.init_from: dict | None = None  # fit --init_from: the checkpoint whose weights start the run
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

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        if self.config.get("subcommand") not in (None, "fit") and not _debug():
            quiet_lightning()
        cfg = self.config.get(self.config.get("subcommand") or "") or self.config
        seed = cfg.get("seed_everything")  # Lightning raises a ValueError, with a traceback, on one out of range
        if not isinstance(seed, bool) and isinstance(seed, int) and not 0 <= seed < 2**32:
            raise ConfigError(f"seed_everything must be in [0, 2**32) (or true for a random one), got {seed}")

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--experiment", type=str, default="default", help="Run name: logs/<experiment>/ holds its files."
        )
        parser.add_argument("--log_dir", type=str, default="logs", help="Folder that holds every experiment.")
        parser.add_argument(
            "--tracker",
            type=str | None,
            default=None,
            help="fit only: also log to csv, mlflow or wandb (Lightning's loggers, named after the experiment; "
            "the full config and the samples go there too); see configs/presets/{csv,mlflow,wandb}.yaml.",
        )
        parser.add_argument(
            "--tracker_uri",
            type=str | None,
            default=None,
            help="mlflow: the tracking store (default: sqlite under --log_dir).",
        )
        parser.add_argument(
            "--init_from",
            type=str | None,
            default=None,
            help="fit only: start a new run from this checkpoint's weights, architecture and tokenizer "
            "(fresh optimizer, schedule and data order); --ckpt_path resumes a run exactly instead.",
        )
        parser.add_lightning_class_args(CraftCheckpoint, "checkpoint")
        parser.add_lightning_class_args(SampleGeneration, "samples")
        parser.add_lightning_class_args(TokenThroughput, "throughput")
        parser.link_arguments(
            ("log_dir", "experiment"), "checkpoint.dirpath", compute_fn=lambda d, e: str(checkpoint_dir(d, e))
        )
        parser.link_arguments("data.block_size", "model.block_size")
        # The model's vocabulary is the prepared corpus's: linked once the data module is built.
        parser.link_arguments("data", "model.vocab_size", compute_fn=prepare_vocab, apply_on="instantiate")

    # -- checkpoint path: resolve `last`, never start fresh silently, rebuild the architecture --

    def before_instantiate_classes(self) -> None:
        """Check ``--ckpt_path`` / ``--init_from`` and apply them to the config before anything is
        built (craft/checkpoint.py)."""
        cfg = self.config[self.subcommand] if self.subcommand else None
        check_experiment((cfg or self.config).get("experiment"))  # before anything is written
        if cfg is not None and cfg.get("init_from") is not None and self.subcommand != "fit":
            raise CraftError(f"--init_from starts a training run: it is for fit, not {self.subcommand}")
        self.resumed = use_checkpoint(self.subcommand, cfg) if cfg is not None else None
        self.init_from = use_init_from(cfg) if cfg is not None and self.subcommand == "fit" else None

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as e:  # jsonargparse wraps what a link's compute_fn raises (prepare_vocab)
            if isinstance(e.__cause__, CraftError):
                raise e.__cause__ from None
            raise

    def instantiate_trainer(self, **kwargs: Any):
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        trainer_init = (self.config_init[self.subcommand] if self.subcommand else self.config_init)["trainer"]
        fitting = self.subcommand in (None, "fit")
        extra: list = [LoggingStepSync(), SampleWriter(), RunSummary()]
        if cfg.trainer.get("logger") in (None, True):
            if fitting:
                # version="" keeps one folder per experiment, so a resume continues its event stream;
                # purge_step makes TensorBoard drop steps the interrupted run logged after its last
                # checkpoint (they are trained again), so the curve has no overlap.
                step = self.resumed.step if self.resumed is not None else 0
                extra_kw = {"purge_step": step} if step else {}
                kwargs["logger"] = TensorBoardLogger(
                    save_dir=cfg.log_dir, name=cfg.experiment, version="", default_hp_metric=False, **extra_kw
                )
            else:
                kwargs["logger"] = False  # validate/test/predict print results and never touch a run's logs
        if fitting and cfg.get("tracker"):
            tracker = make_tracker(cfg.tracker, cfg.log_dir, cfg.experiment, cfg.get("tracker_uri"))
            mine = kwargs.get("logger", cfg.trainer.get("logger"))
            kwargs["logger"] = [mine, tracker] if isinstance(mine, Logger) else [tracker]
        if fitting:
            extra.append(GracefulStop())
        if fitting and kwargs.get("logger", cfg.trainer.get("logger")) is not False:
            extra.append(LearningRateMonitor(logging_interval="step"))
        if not fitting and cfg.trainer.get("enable_progress_bar") is None and not _debug():
            kwargs["enable_progress_bar"] = False  # predict/validate/test: the output is the text or the metrics
        if kwargs.get("enable_progress_bar", cfg.trainer.get("enable_progress_bar")) is not False:
            extra.append(CraftProgressBar())
        user = trainer_init.get("callbacks") or []
        trainer_init["callbacks"] = [*(user if isinstance(user, list) else [user]), *extra]
        trainer = super().instantiate_trainer(**kwargs)
        # A run shorter than the logging interval would have no training curve at all.
        if 0 < trainer.max_steps < 2 * trainer.log_every_n_steps:
            trainer.log_every_n_steps = max(1, trainer.max_steps // 10)
        return trainer

    def after_instantiate_classes(self) -> None:
        if self.init_from is not None:
            self.model.load_state_dict(self.init_from["state_dict"])
        if self.resumed is not None and self.subcommand == "fit":
            saved = self.resumed.tokenizer
            tokenizer = self.datamodule.tokenizer
            if tokenizer.state() != saved:
                theirs = Tokenizer.from_state(saved)
                raise CraftError(
                    f"cannot resume: the {tokenizer.describe()} built from {self.datamodule.path} "
                    f"differs from the checkpoint's {theirs.describe()}; resume on the original corpus "
                    "and tokenizer settings"
                )

    def before_fit(self) -> None:
        if self.resumed is not None and self.resumed.batch_order is not None:
            # Before Lightning starts: its setup opens the loggers (a new event file) before any
            # checkpoint state is restored, and a refused resume must leave the run as it was.
            from craft.data.windows import check_batch_order

            self.datamodule.prepare_data()
            self.datamodule.setup("fit")
            check_batch_order(self.resumed.batch_order, self.datamodule.batch_order(self.trainer))
        if self.resumed is not None:
            check_steps_left(self.resumed, self.config[self.subcommand].trainer)
        if self.init_from is not None:
            # The new corpus scored by the weights as they came: the run's first val/loss, at step 0.
            # Under no_grad rather than inference_mode: metric states reset in inference mode would
            # be inference tensors, which training then cannot update in place.
            self.trainer.validate_loop.inference_mode = False
            self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)


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
    if not debug:  # a deprecation inside Lightning's own pytree helpers (torch >= 2.10): nothing to act on
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    levels = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
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
    except NothingToDo as e:
        print(f"craft: {e}", flush=True)
        return
    finally:
        for name, level in levels.items():  # main() may run again in this process (tests, notebooks)
            logging.getLogger(name).setLevel(level)
    trainer = getattr(cli, "trainer", None)
    stop = next((c for c in getattr(trainer, "callbacks", []) if isinstance(c, GracefulStop)), None)
    if stop is not None and stop.exit_code is not None:
        _exit_after_signal(
            stop.exit_code, f"craft: stopped at global step {trainer.global_step}; resume with --ckpt_path last"
        )
