"""The bad-input table: each case prepares files in a folder and returns CLI arguments.

Used by tests/test_bad_input.py (asserts the message, the exit code and that nothing on disk
changed) and by docs/gen_errors.py (runs each case through `python -m craft` and writes
docs/errors.md with the exact message).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import TINY_MODEL, make_text

BASE = [
    "--log_dir",
    "logs",
    "--experiment",
    "tiny",
    "--seed_everything",
    "7",
    "--data.block_size",
    "16",
    "--data.batch_size",
    "8",
    "--trainer.max_steps",
    "2",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    *TINY_MODEL,
]


def write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def corpus(folder: Path) -> Path:
    return write(folder, "corpus.txt", make_text(20_000))


@dataclass
class Case:
    group: str
    name: str
    args: Callable[[Path], list[str]]  # given the case folder, prepares files and returns CLI args
    expect: str  # substring of the message
    code: int = 2  # exit code; 0 for warnings
    needs_checkpoint: bool = False


LAST = "logs/tiny/checkpoints/last.ckpt"  # the trained checkpoint, from the case folder

# A module in the current folder that a tampered checkpoint names: importing it leaves a marker,
# and calling its f (as Lightning calls an ``_instantiator``) ends the process.
CANARY = (
    "from pathlib import Path\nPath(__file__).with_name('imported').write_text('imported')\n"
    "def f(*args, **kwargs):\n    raise SystemExit('canary ran')\n"
)


def tamper(
    src: Path, dst: Path, norm: str | None = None, tokenizer: dict | None = None, hparams: dict | None = None
) -> Path:
    """A copy of checkpoint ``src`` written with ``torch.save``, only the given names changed
    (``hparams`` sets hyper-parameters, e.g. Lightning's reserved ``_instantiator``)."""
    import torch

    checkpoint = torch.load(src, weights_only=True)
    if norm is not None:
        checkpoint["hyper_parameters"]["norm"] = norm
    if tokenizer is not None:
        checkpoint["tokenizer"] = tokenizer
    if hparams is not None:
        checkpoint["hyper_parameters"].update(hparams)
    torch.save(checkpoint, dst)
    return dst


def tampered(folder: Path, **names) -> Path:
    """The trained last.ckpt, tampered, beside a canary module the checkpoint names."""
    write(folder, "canary.py", CANARY)
    return tamper(folder / "logs" / "tiny" / "checkpoints" / "last.ckpt", folder / "shared.ckpt", **names)


def fit(*extra: str) -> list[str]:
    return ["fit", *BASE, *extra]


def parquet(folder: Path, name: str, columns: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / name
    pq.write_table(pa.table(columns), path)
    return path


def predict(*extra: str) -> list[str]:
    return ["predict", *BASE, "--model.sampling.max_new_tokens", "5", "--ckpt_path", "last", *extra]


CASES = [
    Case("corpus", "missing file", lambda d: fit("--data.path", str(d / "got.txt")), "corpus not found"),
    Case("corpus", "empty file", lambda d: fit("--data.path", str(write(d, "e.txt", " \n"))), "is empty"),
    Case(
        "corpus",
        "folder with no text",
        lambda d: fit("--data.path", str(write(d, "f/a.png", b"\x89PNG").parent)),
        "has no files craft reads",
    ),
    Case(
        "corpus",
        "glob that matches nothing",
        lambda d: fit("--data.path", str(d / "corpora" / "*.jsonl")),
        "matches no files",
    ),
    Case(
        "corpus",
        "jsonl line that is not JSON",
        lambda d: fit("--data.path", str(write(d, "c.jsonl", '{"text": "a b c"}\n{"text": "d\n'))),
        "c.jsonl line 2 is not JSON",
    ),
    Case(
        "corpus",
        "jsonl record without the text field",
        lambda d: fit("--data.path", str(write(d, "c.jsonl", '{"body": "a b c"}\n'))),
        "c.jsonl line 1 has no field 'text' (it has: body); set data.text_field",
    ),
    Case(
        "corpus",
        "parquet file without the text column",
        lambda d: fit("--data.path", str(parquet(d, "p.parquet", {"content": ["a b c"]}))),
        "p.parquet has no column 'text' (it has: content); set data.text_field",
    ),
    Case(
        "corpus",
        "not UTF-8",
        lambda d: fit("--data.path", str(write(d, "l.txt", "café au lait".encode("latin-1")))),
        "is not valid UTF-8 at byte offset 3",
    ),
    Case(
        "corpus",
        "binary file",
        lambda d: fit("--data.path", str(write(d, "b.txt", b"ab\x00\x01\x02" * 100))),
        "looks binary",
    ),
    Case(
        "corpus",
        "shorter than block_size + 1 per split",
        lambda d: fit("--data.path", str(write(d, "s.txt", "abcdefgh" * 20))),
        "needs at least 17",
    ),
    Case(
        "config",
        "unknown key (command line)",
        lambda d: fit("--data.path", str(corpus(d)), "--model.dmodel", "64"),
        "--model.dmodel",
    ),
    Case(
        "config",
        "unknown key (YAML)",
        lambda d: fit("--data.path", str(corpus(d)), "--config", str(write(d, "c.yaml", "model:\n  n_layer: 2\n"))),
        "n_layer",
    ),
    Case(
        "config", "wrong type", lambda d: fit("--data.path", str(corpus(d)), "--model.d_model", "wide"), "model.d_model"
    ),
    Case(
        "config",
        "d_model % n_head != 0",
        lambda d: fit("--data.path", str(corpus(d)), "--model.n_head", "5"),
        "d_model (32) must be divisible by n_head (5)",
    ),
    Case(
        "config",
        "negative size",
        lambda d: fit("--data.path", str(corpus(d)), "--model.n_layers", "-2"),
        "n_layers must be a positive integer",
    ),
    Case(
        "config",
        "unknown optimizer",
        lambda d: fit("--data.path", str(corpus(d)), "--model.optimizer", "sgd"),
        "unknown optimizer 'sgd': use one of ['adamw', 'muon']",
    ),
    Case(
        "config",
        "unknown role in lr_mults",
        lambda d: fit("--data.path", str(corpus(d)), "--model.lr_mults", "{embeddings: 10}"),
        "unknown role 'embeddings' in model.lr_mults: use any of ['matrix', 'embed', 'head', 'scalar']",
    ),
    Case(
        "resume",
        "resumed with other lr_mults",
        lambda d: fit("--data.path", str(corpus(d)), "--ckpt_path", "last", "--model.lr_mults", "{embed: 10}"),
        "model.lr_mults: checkpoint None vs config {'embed': 10.0}",
        needs_checkpoint=True,
    ),
    Case(
        "config",
        "negative softcap",
        lambda d: fit("--data.path", str(corpus(d)), "--model.softcap", "-1"),
        "softcap must be a number >= 0 (0: off), got -1.0",
    ),
    Case(
        "resume",
        "AdamW checkpoint resumed with Muon",
        lambda d: fit("--data.path", str(corpus(d)), "--ckpt_path", "last", "--model.optimizer", "muon"),
        "model.optimizer: checkpoint adamw vs config muon",
        needs_checkpoint=True,
    ),
    Case(
        "config",
        "val_fraction outside (0, 1)",
        lambda d: fit("--data.path", str(corpus(d)), "--data.val_fraction", "1.5"),
        "val_fraction must be in (0, 1)",
    ),
    Case(
        "config",
        "lr 0",
        lambda d: fit("--data.path", str(corpus(d)), *["--model.lr", "0"]),
        "lr must be positive, got 0",
    ),
    Case(
        "config",
        "lr negative",
        lambda d: fit("--data.path", str(corpus(d)), *["--model.lr", "-1"]),
        "lr must be positive, got -1",
    ),
    Case(
        "config",
        "min_lr above lr",
        lambda d: fit("--data.path", str(corpus(d)), *["--model.lr", "1e-3", "--model.min_lr", "1e-2"]),
        "min_lr must be in [0, lr]",
    ),
    Case(
        "config",
        "negative weight decay",
        lambda d: fit("--data.path", str(corpus(d)), *["--model.weight_decay", "-0.1"]),
        "weight_decay must be >= 0, got -0.1",
    ),
    Case(
        "config",
        "betas outside [0, 1)",
        lambda d: fit("--data.path", str(corpus(d)), *["--model.betas", "[2, 3]"]),
        "betas must be two numbers in [0, 1)",
    ),
    Case(
        "config",
        "muon_lr negative",
        lambda d: fit("--data.path", str(corpus(d)), *["--model.optimizer", "muon", "--model.muon_lr", "-1"]),
        "muon_lr must be positive, got -1",
    ),
    Case(
        "config",
        "lr not a finite number",
        lambda d: fit("--data.path", str(corpus(d)), *["--model.lr", ".inf"]),
        "lr must be a finite number, got inf",
    ),
    Case(
        "config",
        "seed out of range",
        lambda d: fit("--data.path", str(corpus(d)), *["--seed_everything", "-1"]),
        "seed_everything must be in [0, 2**32)",
    ),
    Case(
        "config",
        "num_workers negative",
        lambda d: fit("--data.path", str(corpus(d)), *["--data.num_workers", "-1"]),
        "num_workers must be >= 0, got -1",
    ),
    Case(
        "config",
        "empty path list",
        lambda d: fit("--data.path", "[]"),
        "data.path is an empty list",
    ),
    Case(
        "config",
        "mixture weight infinite",
        lambda d: fit("--data.sources", f'[{{"path": "{corpus(d)}", "weight": .inf}}]'),
        "sources[0].weight must be a positive finite number, got inf",
    ),
    Case(
        "resume",
        "different architecture",
        lambda d: fit("--data.path", str(corpus(d)), "--ckpt_path", "last", "--model.d_hid", "128"),
        "model.d_hid: checkpoint 64 vs config 128",
        needs_checkpoint=True,
    ),
    Case(
        "resume",
        "different tokenizer",
        lambda d: fit("--data.path", str(write(d, "other.txt", make_text(20_000) + "Ωμέγα")), "--ckpt_path", "last"),
        "differs from the checkpoint's",
        needs_checkpoint=True,
    ),
    Case(
        "resume",
        "other batch size",
        lambda d: fit(
            "--data.path", str(corpus(d)), "--ckpt_path", "last", "--trainer.max_steps", "4", "--data.batch_size", "4"
        ),
        "the training batch order changed (batch_size: checkpoint 8 vs now 4)",
        needs_checkpoint=True,
    ),
    Case(
        "resume",
        "other corpus size (batches per epoch)",
        lambda d: fit(
            "--data.path",
            str(corpus(d)),
            "--ckpt_path",
            "last",
            "--trainer.max_steps",
            "4",
            "--data.windows_per_epoch",
            "64",
        ),
        "the training batch order changed (batches_per_epoch:",
        needs_checkpoint=True,
    ),
    Case(
        "resume",
        "run already at max_steps (nothing to do)",
        lambda d: fit("--data.path", str(corpus(d)), "--ckpt_path", "last"),
        "no training steps ran",
        code=0,
        needs_checkpoint=True,
    ),
    Case(
        "fit",
        "fresh fit where only step*.ckpt are left",
        lambda d: [
            (d / "logs" / "tiny" / "checkpoints" / "last.ckpt").unlink(),
            *fit("--data.path", str(corpus(d))),
        ][1:],
        "experiment 'tiny' already has a run in",
        needs_checkpoint=True,
    ),
    Case(
        "fit",
        "Lightning's checkpoint interval",
        lambda d: fit("--data.path", str(corpus(d)), "--checkpoint.every_n_train_steps", "7"),
        "checkpoint.every_n_train_steps is not used by craft",
    ),
    Case(
        "fit",
        "limits that train nothing",
        lambda d: fit("--data.path", str(corpus(d)), "--trainer.max_steps", "-1", "--trainer.max_epochs", "0"),
        "--trainer.max_epochs 0 trains nothing",
    ),
    Case(
        "resume",
        "no checkpoint to resume",
        lambda d: fit("--data.path", str(corpus(d)), "--ckpt_path", "last"),
        "no last.ckpt in logs/tiny/checkpoints",
    ),
    Case(
        "init_from",
        "new corpus with characters outside the checkpoint's vocabulary",
        lambda d: fit(
            "--data.path",
            str(write(d, "other.txt", make_text(20_000) + "Ωμέγα")),
            "--experiment",
            "adapted",
            "--init_from",
            "logs/tiny/checkpoints/last.ckpt",
        ),
        "5 character(s) outside the model's",
        needs_checkpoint=True,
    ),
    Case(
        "init_from",
        "with --ckpt_path as well",
        lambda d: fit(
            "--data.path", str(corpus(d)), "--init_from", "logs/tiny/checkpoints/last.ckpt", "--ckpt_path", "last"
        ),
        "--init_from starts a new run from a model's weights and --ckpt_path resumes a run exactly: give one",
        needs_checkpoint=True,
    ),
    Case(
        "init_from",
        "given to predict",
        lambda d: predict("--init_from", "logs/tiny/checkpoints/last.ckpt"),
        "--init_from starts a training run: it is for fit, not predict",
        needs_checkpoint=True,
    ),
    Case(
        "config",
        "experiment name that leaves --log_dir",
        lambda d: ["fit", *BASE, "--experiment", "../../x", "--data.path", str(corpus(d))],
        "--experiment '../../x' is not one folder name",
    ),
    Case(
        "config",
        "unknown tracker",
        lambda d: fit("--data.path", str(corpus(d)), "--tracker", "neptune"),
        "unknown tracker 'neptune': use one of csv, mlflow, wandb",
    ),
    Case(
        "export",
        "--format hf of a block transformers has no class for",
        lambda d: ["export", "--format", "hf", "--ckpt_path", str(tampered(d, norm="rmsnorm")), "--out", "hf"],
        "no transformers architecture computes this block (norm rmsnorm, mlp gelu, positions learned)",
        needs_checkpoint=True,
    ),
    Case(
        "export",
        "--format hf with --int8",
        lambda d: ["export", "--format", "hf", "--int8", "--ckpt_path", LAST, "--out", "hf"],
        "--int8 is for --format onnx",
        needs_checkpoint=True,
    ),
    Case(
        "export",
        "--format hf with --web",
        lambda d: ["export", "--format", "hf", "--web", "--ckpt_path", LAST, "--out", "hf"],
        "--web is for --format onnx: the page runs the ONNX decoder",
        needs_checkpoint=True,
    ),
    Case(
        "export",
        "checkpoint names a Lightning class path",
        lambda d: ["export", "--ckpt_path", str(tampered(d, hparams={"_class_path": "canary.f"})), "--out", "out"],
        "hyper_parameters['_class_path'] is 'canary.f', a name Lightning would import",
        needs_checkpoint=True,
    ),
    Case(
        "predict",
        "prompt with characters outside the vocabulary",
        lambda d: predict("--data.prompts", '["the ΩΩ king"]'),
        "'Ω' at 4",
        needs_checkpoint=True,
    ),
    Case(
        "predict",
        "prompt longer than the context (warning, cropped)",
        lambda d: predict("--data.prompts", '["' + "the king " * 10 + '"]'),
        "only its last tokens are used",
        code=0,
        needs_checkpoint=True,
    ),
    Case(
        "predict",
        "temperature < 0",
        lambda d: predict("--model.sampling.temperature", "-1"),
        "temperature must be >= 0",
        needs_checkpoint=True,
    ),
    Case(
        "predict",
        "max_new_tokens < 0",
        lambda d: predict("--model.sampling.max_new_tokens", "-5"),
        "max_new_tokens must be >= 0, got -5",
        needs_checkpoint=True,
    ),
    Case(
        "predict",
        "temperature not a finite number",
        lambda d: predict("--model.sampling.temperature", ".nan"),
        "temperature must be a finite number, got nan",
        needs_checkpoint=True,
    ),
    Case(
        "predict",
        "top_p outside (0, 1]",
        lambda d: predict("--model.sampling.top_p", "1.5"),
        "top_p must be in (0, 1]",
        needs_checkpoint=True,
    ),
    Case(
        "predict",
        "checkpoint names a module for a part",
        lambda d: ["predict", *BASE, "--ckpt_path", str(tampered(d, norm="canary.Nope"))],
        "pass --model.norm canary.Nope yourself to trust it",
        needs_checkpoint=True,
    ),
    Case(
        "predict",
        "checkpoint names a module for its tokenizer",
        lambda d: [
            "predict",
            *BASE,
            "--ckpt_path",
            str(tampered(d, tokenizer={"type": "zzz", "class_path": "canary.Nope"})),
        ],
        "pass --data.tokenizer canary.Nope yourself to trust it",
        needs_checkpoint=True,
    ),
    Case(
        "predict",
        "checkpoint names a Lightning instantiator",
        lambda d: ["predict", *BASE, "--ckpt_path", str(tampered(d, hparams={"_instantiator": "canary.f"}))],
        "hyper_parameters['_instantiator'] is 'canary.f', a name Lightning would import",
        needs_checkpoint=True,
    ),
    Case(
        "predict",
        "missing checkpoint file",
        lambda d: ["predict", *BASE, "--ckpt_path", str(d / "nope.ckpt")],
        "checkpoint not found",
    ),
    Case(
        "predict",
        "corrupt checkpoint file",
        lambda d: ["predict", *BASE, "--ckpt_path", str(write(d, "bad.ckpt", b"PK\x03\x04 truncated"))],
        "cannot load checkpoint",
    ),
    Case(
        "predict",
        "empty checkpoint file",
        lambda d: ["predict", *BASE, "--ckpt_path", str(write(d, "empty.ckpt", b""))],
        "the file is empty (0 bytes)",
    ),
    Case(
        "predict",
        "checkpoint path is a folder",
        lambda d: [(d / "checkpoints").mkdir(exist_ok=True), "predict", *BASE, "--ckpt_path", str(d / "checkpoints")][
            1:
        ],
        "is a folder, not a checkpoint file",
    ),
    Case(
        "predict",
        "a zip file that is not a checkpoint",
        lambda d: ["predict", *BASE, "--ckpt_path", str(zipped(d / "junk.ckpt"))],
        "a zip file that torch.save did not write",
    ),
]


def zipped(path: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "not a checkpoint")
    return path


def train_checkpoint(folder: Path) -> None:
    """A tiny trained run at folder/logs/tiny, on folder/corpus.txt."""
    from craft.cli import main

    main(["fit", *BASE, "--data.path", str(corpus(folder))])
