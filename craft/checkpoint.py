"""Checkpoint reading: a checkpoint is data, not code.

Two guarantees, for every entry point that reads a checkpoint (the CLI subcommands,
``LanguageModel.load_from_checkpoint``, ``python -m craft.export``):

1. It is loaded with ``torch.load(weights_only=True)``: unpickling cannot run code.
2. The names it holds (the architecture parts ``norm``, ``mlp``, ``positions`` and the tokenizer's
   type) resolve only against craft's built-in parts and tokenizers, or against the import path that
   the caller names for that same field in this call (``--model.norm mylab.norms.DyT``). Anything
   else is refused with one line before anything is imported: a ``last.ckpt`` shared beside a
   ``.py`` file it names cannot make craft run that file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from craft.data.tokenizers import BUILTIN_TOKENIZERS
from craft.errors import CraftError
from craft.model.blocks import REGISTRY

PART_FIELDS = tuple(REGISTRY)  # the config fields that name a class: norm, mlp, positions

# How the caller trusts a name: given the field ("norm", ..., "tokenizer") and the name, the words
# of the hint ("pass --model.norm X yourself").
Hint = Callable[[str, str], str]


def cli_hint(field: str, name: str) -> str:
    option = "--data.tokenizer" if field == "tokenizer" else f"--model.{field}"
    return f"pass {option} {name} yourself to trust it"


def load_checkpoint(path: str | Path, weights_only: bool = True) -> dict[str, Any]:
    """Load a checkpoint safely: with ``weights_only=True`` (the default) a malicious pickle cannot
    run code. ``weights_only=False`` is for files you trust (``--weights_only false``)."""
    path = Path(path)
    if not path.is_file():
        raise CraftError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except Exception as e:  # torch raises several types for truncated, foreign or unsafe files
        text = str(e).strip()
        first_line = text.splitlines()[0].split(". ")[0] if text else type(e).__name__
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
