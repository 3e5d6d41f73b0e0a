"""Checkpoint reading: a checkpoint is data, not code.

Two guarantees, for every entry point that reads a checkpoint (the CLI subcommands,
``LanguageModel.load_from_checkpoint``, ``python -m craft export``):

1. It is loaded with ``torch.load(weights_only=True)``: unpickling cannot run code.
2. The names it holds (the architecture parts ``norm``, ``mlp``, ``positions`` and the tokenizer's
   type) resolve only against craft's built-in parts and tokenizers, or against the import path that
   the caller names for that same field in this call (``--model.norm mylab.norms.DyT``). Anything
   else is refused with one line before anything is imported: a ``last.ckpt`` shared beside a
   ``.py`` file it names cannot make craft run that file.
3. Lightning's own reserved hyper-parameter keys (``_instantiator``, ``_class_path``: Lightning
   imports what they name when it rebuilds a module) are refused unless they hold exactly what
   craft writes, whichever Lightning release is installed (2.6.6 added an allowlist of its own;
   pyproject.toml requires it as a second line of defence).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace

from craft.data.tokenizers import BUILTIN_TOKENIZERS, Tokenizer, class_path
from craft.errors import CraftError, NothingToDo, note
from craft.model.blocks import REGISTRY
from craft.model.config import ARCHITECTURE_FIELDS

PART_FIELDS = tuple(REGISTRY)  # the config fields that name a class: norm, mlp, positions

# Lightning reserves hyper-parameter keys that start with "_" (``_instantiator``, ``_class_path``)
# and imports what they name. craft writes exactly one, through LightningCLI; any other is refused.
CRAFT_RESERVED = {"_instantiator": "lightning.pytorch.cli.instantiate_module"}
HPARAM_SECTIONS = ("hyper_parameters", "datamodule_hyper_parameters")

# How the caller trusts a name: given the field ("norm", ..., "tokenizer") and the name, the words
# of the hint ("pass --model.norm X yourself").
Hint = Callable[[str, str], str]


def option(field: str) -> str:
    """The command-line option that names a class for ``field`` (the CLI's and craft.export's)."""
    return "--data.tokenizer" if field == "tokenizer" else f"--model.{field}"


def cli_hint(field: str, name: str) -> str:
    return f"pass {option(field)} {name} yourself to trust it"


def load_checkpoint(path: str | Path, weights_only: bool = True) -> dict[str, Any]:
    """Load a checkpoint safely: with ``weights_only=True`` (the default) a malicious pickle cannot
    run code. ``weights_only=False`` is for files you trust (``--weights_only false``)."""
    path = Path(path)
    if path.is_dir():
        raise CraftError(f"{path} is a folder, not a checkpoint file: give a .ckpt inside it (e.g. its last.ckpt)")
    if not path.is_file():
        raise CraftError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CraftError(f"cannot load checkpoint {path}: the file is empty (0 bytes), it was never written")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CraftError(f"cannot load checkpoint {path}: not a torch.save file (truncated, damaged or something else)")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except Exception as e:  # torch raises several types for truncated, foreign or unsafe files
        text = str(e).strip()
        first_line = text.splitlines()[0].split(". ")[0] if text else type(e).__name__
        if "inline_container" in first_line or "PytorchStreamReader" in first_line:  # a zip, but not torch's
            first_line = "a zip file that torch.save did not write"
        raise CraftError(f"cannot load checkpoint {path}: {first_line}") from None


def read_checkpoint(
    path: str | Path, trusted: Mapping[str, Any], hint: Hint = cli_hint, weights_only: bool = True
) -> dict[str, Any]:
    """A craft checkpoint, loaded safely and with every name in it checked by ``check_names``."""
    checkpoint = load_checkpoint(path, weights_only)
    if not isinstance(checkpoint.get("tokenizer"), dict) or not checkpoint.get("hyper_parameters"):
        raise CraftError(f"{path} is not a craft checkpoint (no tokenizer or hyperparameters in it)")
    check_names(checkpoint, trusted, hint)
    return checkpoint


def check_names(checkpoint: dict[str, Any], trusted: Mapping[str, Any], hint: Hint = cli_hint) -> None:
    """Refuse any part or tokenizer class the checkpoint names that is neither built in nor trusted.

    ``trusted`` maps a field (``norm``, ``mlp``, ``positions``, ``tokenizer``) to the import path
    the caller gave for it in this call (or None). Nothing is imported here.
    """
    check_reserved(checkpoint)
    hparams = checkpoint.get("hyper_parameters") or {}
    for field in PART_FIELDS:
        name = hparams.get(field)
        if name is None or (isinstance(name, str) and (name in REGISTRY[field] or name == trusted.get(field))):
            continue
        if not isinstance(name, str):
            raise CraftError(f"the checkpoint's model.{field} is {name!r}, not the name of a {field}")
        raise CraftError(
            f"the checkpoint's model.{field} is {name!r}, not a built-in {field} ({', '.join(REGISTRY[field])}); "
            f"craft imports nothing a checkpoint names: {hint(field, name)}"
        )
    state = checkpoint.get("tokenizer")
    if not isinstance(state, dict):
        return  # no tokenizer: the model's own loading says this is not a craft checkpoint
    kind, class_path = state.get("type"), state.get("class_path")
    if kind in BUILTIN_TOKENIZERS and class_path is None:
        return
    if isinstance(class_path, str) and class_path == trusted.get("tokenizer"):
        return
    if not isinstance(class_path, str):
        raise CraftError(
            f"the checkpoint's tokenizer type {kind!r} is not a built-in one ({', '.join(BUILTIN_TOKENIZERS)}) "
            "and names no class; it was not written by this craft"
        )
    raise CraftError(
        f"the checkpoint's tokenizer is {class_path!r} (type {kind!r}), not a built-in one "
        f"({', '.join(BUILTIN_TOKENIZERS)}); craft imports nothing a checkpoint names: {hint('tokenizer', class_path)}"
    )


def check_reserved(checkpoint: dict[str, Any]) -> None:
    """Refuse a Lightning-reserved hyper-parameter (a key starting with ``_``) that craft did not write."""
    for section in HPARAM_SECTIONS:
        hparams = checkpoint.get(section)
        if not hparams:
            continue
        if not isinstance(hparams, Mapping):
            raise CraftError(
                f"the checkpoint's {section} is a {type(hparams).__name__}, not a mapping; it was not written by craft"
            )
        for key, value in hparams.items():
            if not (isinstance(key, str) and key.startswith("_")) or (
                section == "hyper_parameters" and CRAFT_RESERVED.get(key) == value
            ):
                continue
            raise CraftError(
                f"the checkpoint's {section}[{key!r}] is {value!r}, a name Lightning would import; "
                "craft imports nothing a checkpoint names and never writes this, so the file was altered: "
                "use a checkpoint from a run you made"
            )


# -- the CLI's --ckpt_path ---------------------------------------------------------------------


def checkpoint_dir(log_dir: str, experiment: str) -> Path:
    return Path(log_dir) / experiment / "checkpoints"


def check_experiment(name: Any) -> str:
    """An experiment name is one folder name under ``--log_dir``: refuse anything that is empty,
    ``.``/``..``, or holds a path separator or NUL, so no run writes outside ``--log_dir``."""
    bad = (
        not isinstance(name, str)
        or name.strip() != name
        or name in ("", ".", "..")
        or any(c in name for c in "/\\\0")
        or Path(name).name != name
    )
    if bad:
        raise CraftError(
            f"--experiment {name!r} is not one folder name: a run's files go in <log_dir>/<experiment>/, so the "
            "name may not be empty, '.' or '..', hold '/' or '\\', or start or end with a space; pick e.g. 'got_char'"
        )
    return name


@dataclass(frozen=True)
class Checkpoint:
    """The checkpoint a command runs from, after ``use_checkpoint`` checked it."""

    path: Path
    step: int
    tokenizer: dict[str, Any]
    batch_order: dict[str, Any] | None = None  # TextDataModule.batch_order() when it was written
    epochs_completed: int = 0  # Lightning's count (for checkpoints without a batch order)


def use_checkpoint(subcommand: str, cfg: Namespace) -> Checkpoint | None:
    """Resolve and check ``cfg.ckpt_path`` for ``subcommand``, and apply it to ``cfg`` (the parsed
    config of that subcommand, before anything is instantiated).

    - ``fit`` without one refuses an experiment folder that holds any record of a run (checkpoints,
      config.yaml, summary.json, events): nothing is mixed or overwritten;
    - ``fit`` refuses limits that train nothing, and a resume with no steps left;
    - ``last`` is the experiment's ``last.ckpt`` and must exist (never a silent fresh start);
    - the checkpoint's names must be built in or named by this config (``check_names``);
    - ``fit`` needs the config's architecture to equal the checkpoint's (names the fields that differ);
    - validate/test/predict take the checkpoint's architecture and tokenizer, the config's
      generation settings.
    """
    folder = checkpoint_dir(cfg.log_dir, cfg.experiment)
    if "weights_only" in cfg and cfg.weights_only is None:
        cfg.weights_only = True  # checkpoints hold only tensors and primitives: never unpickle code
    ckpt_path = cfg.get("ckpt_path")
    if subcommand == "fit":
        check_trains(cfg.trainer)
    if ckpt_path is None:
        if subcommand == "fit" and (records := run_records(folder.parent)):
            newest = max(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, default=None)
            resume = "--ckpt_path last" if (folder / "last.ckpt").is_file() else f"--ckpt_path {newest}"
            how = f"resume with {resume}, or " if newest is not None else "move that folder away, or "
            raise CraftError(
                f"experiment {cfg.experiment!r} already has a run in {folder.parent} ({', '.join(records)}); "
                f"{how}pick a new --experiment name (nothing was overwritten)"
            )
        return None
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
    tokenizer = cfg.data.get("tokenizer")
    trusted = {f: cfg.model.get(f) for f in PART_FIELDS}
    trusted["tokenizer"] = tokenizer.get("class_path") if isinstance(tokenizer, Namespace) else None
    checkpoint = read_checkpoint(path, trusted, weights_only=cfg.get("weights_only") is not False)
    cfg.ckpt_path = str(path)
    hparams = checkpoint["hyper_parameters"]
    order = (checkpoint.get("TextDataModule") or {}).get("batch_order")
    progress = ((checkpoint.get("loops") or {}).get("fit_loop") or {}).get("epoch_progress") or {}
    used = Checkpoint(
        path,
        int(checkpoint.get("global_step", 0)),
        checkpoint["tokenizer"],
        order if isinstance(order, dict) else None,
        int((progress.get("current") or {}).get("completed", 0)),
    )
    if subcommand == "fit":
        wrong = [
            f"model.{f}: checkpoint {hparams[f]} vs config {cfg.model.get(f)}"
            # The optimizer's state must fit too: its kind, and its groups (lr_mults splits them).
            for f in (*ARCHITECTURE_FIELDS, "optimizer", "lr_mults")
            if f != "vocab_size" and f in hparams and cfg.model.get(f) != hparams[f]
        ]
        if wrong:
            raise CraftError(
                f"cannot resume from {path}: its network or optimizer differs from the config ({'; '.join(wrong)}); "
                "use the run's original config"
            )
        check_batch_order_early(used, cfg.data)
        note(f"resuming {cfg.experiment!r} from {path} at global step {used.step}")
        return used
    # validate/test/predict rebuild the checkpoint's network; generation settings stay the config's.
    take_network(cfg, checkpoint)
    return used


def run_records(run: Path) -> list[str]:
    """What a run folder holds that a fresh run there would mix with or replace."""
    found = []
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) if (run / "checkpoints").is_dir() else []
    if ckpts:
        found.append(ckpts[0] if len(ckpts) == 1 else f"{len(ckpts)} checkpoints")
    found += [name for name in ("config.yaml", "summary.json") if (run / name).is_file()]
    if any(run.glob("events.out.tfevents.*")):
        found.append("TensorBoard events")
    return found


def check_trains(trainer: Namespace) -> None:
    """Refuse a fit whose limits leave nothing to train: it would write a step-0 last.ckpt and
    claim the experiment name."""
    max_steps, max_epochs = trainer.get("max_steps"), trainer.get("max_epochs")
    limit = trainer.get("limit_train_batches")
    if max_steps is not None and (max_steps == 0 or max_steps < -1):
        raise CraftError(
            f"--trainer.max_steps {max_steps} trains nothing: give a positive number of steps, "
            "or -1 to let trainer.max_epochs decide"
        )
    if max_epochs is not None and (max_epochs == 0 or max_epochs < -1):
        raise CraftError(
            f"--trainer.max_epochs {max_epochs} trains nothing: give a positive number of epochs, "
            "or -1 for no epoch limit (then set trainer.max_steps)"
        )
    if limit is not None and not isinstance(limit, bool) and limit == 0:
        raise CraftError("--trainer.limit_train_batches 0 trains nothing: use a positive fraction or batch count")


def check_batch_order_early(used: Checkpoint, data: Namespace) -> None:
    """The batch-order settings the config alone fixes, checked before anything is built; the
    rest (batches per epoch, mixture weights) once the corpus is read (``CraftCLI.before_fit``)."""
    from craft.data.windows import check_batch_order

    if used.batch_order is not None:
        keys = ("seed", "batch_size")
        check_batch_order(
            {k: used.batch_order[k] for k in keys if k in used.batch_order}, {k: data.get(k) for k in keys}
        )


def check_steps_left(used: Checkpoint, trainer: Namespace) -> None:
    """A resume with no step left ends here, once every check that could refuse it has passed,
    with exit 0 and no file touched (Lightning would start, train nothing and rewrite the run's
    records): rerunning a finished resume is harmless."""
    step = used.step
    max_steps, max_epochs = trainer.get("max_steps"), trainer.get("max_epochs")
    if used.batch_order is not None:  # the sampler's own arithmetic: batch index = step * accumulation
        batches = int(used.batch_order["batches_per_epoch"])
        epochs = step * int(trainer.get("accumulate_grad_batches") or 1) // batches
    else:
        epochs = used.epochs_completed
    reached = None
    if max_steps is not None and max_steps > 0 and step >= max_steps:
        reached = f"trainer.max_steps {max_steps}"
    elif max_epochs is not None and max_epochs > 0 and epochs >= max_epochs:
        reached = f"trainer.max_epochs {max_epochs}"
    if reached:
        raise NothingToDo(
            f"no training steps ran: {used.path} is at step {step} ({epochs} whole epochs), which already "
            f"reaches {reached}; raise it to train on (no file was changed)"
        )


def take_network(cfg: Namespace, checkpoint: dict[str, Any]) -> None:
    """Put the checkpoint's architecture and tokenizer into ``cfg`` (the tokenizer as the config
    entry that rebuilds it, fitted: no corpus is needed to know it)."""
    hparams = checkpoint["hyper_parameters"]
    for f in ARCHITECTURE_FIELDS:
        if f in hparams and f != "vocab_size":
            cfg.model[f] = hparams[f]
    cfg.data.block_size = hparams["block_size"]
    state = checkpoint["tokenizer"]
    cfg.data.tokenizer = Namespace(
        class_path=class_path(Tokenizer.class_of(state)), init_args=Namespace(**Tokenizer.init_args_of(state))
    )


def use_init_from(cfg: Namespace) -> dict[str, Any] | None:
    """``fit --init_from``: check the checkpoint and make ``cfg`` a new run of its network.

    The run is new (its own experiment folder, a fresh optimizer, schedule and data order); only the
    weights, the architecture and the tokenizer come from the checkpoint, which is returned so the
    CLI can load its weights once the model is built. ``--ckpt_path`` still means "resume exactly".
    """
    path = cfg.get("init_from")
    if path is None:
        return None
    if cfg.get("ckpt_path") is not None:
        raise CraftError(
            "--init_from starts a new run from a model's weights and --ckpt_path resumes a run exactly: give one"
        )
    tokenizer = cfg.data.get("tokenizer")
    trusted = {f: cfg.model.get(f) for f in PART_FIELDS}
    trusted["tokenizer"] = tokenizer.get("class_path") if isinstance(tokenizer, Namespace) else None
    checkpoint = read_checkpoint(path, trusted, weights_only=cfg.get("weights_only") is not False)
    take_network(cfg, checkpoint)
    note(
        f"new run {cfg.experiment!r} from the weights of {path} (its step {int(checkpoint.get('global_step', 0))}): "
        "its architecture and tokenizer, a fresh optimizer, schedule and data order"
    )
    return checkpoint
