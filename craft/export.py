"""Export a checkpoint to a folder that runs without PyTorch (ONNX + numpy + onnxruntime).

    python -m craft.export --ckpt_path logs/got_char_1M_ctx256_bs64/checkpoints/last.ckpt --out export/got_char --int8

The folder holds ``model.onnx`` (one decoder step that takes and returns the KV cache),
``model.int8.onnx`` with ``--int8`` (onnxruntime dynamic int8 quantization of the matmul weights),
``tokenizer.json``, ``manifest.json`` and ``run.py``: a copy of ``craft/runtime.py``, so
``python run.py --prompt "..."`` works on a machine that has only numpy and onnxruntime.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.nn as nn

import craft
from craft.checkpoint import PART_FIELDS
from craft.errors import CraftError
from craft.model import GPT
from craft.model.config import ARCHITECTURE_FIELDS

OPSET = 18


class DecoderStep(nn.Module):
    """``(ids (B, T), past_k, past_v (L, B, nh, P, hs)) -> (logits (B, T, V), present_k, present_v)``.

    Positions start at P (the cached length), so the same graph does the prefill (P = 0) and each
    one-token step; the presents are the pasts with the T new keys and values appended.
    """

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, ids: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor):
        cache = [(past_k[i], past_v[i]) for i in range(past_k.size(0))]
        logits, _ = self.gpt(ids, cache=cache, start_pos=past_k.size(3), all_logits=True)
        return logits, torch.stack([k for k, _ in cache]), torch.stack([v for _, v in cache])


def empty_cache(config, batch: int, length: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (config.n_layers, batch, config.n_head, length, config.head_size)
    return torch.zeros(shape), torch.zeros(shape)


@contextlib.contextmanager
def quiet_logs(*names: str):
    """Silence library log chatter that is not about this model (e.g. "torchvision is not installed")."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(gpt: GPT, path: Path) -> None:
    """Trace one decoder step to ONNX with batch, new tokens and cached length all dynamic."""
    gpt = gpt.eval()
    c = gpt.config
    ids = torch.zeros(2, 3, dtype=torch.long)  # sizes > 1: the exporter treats 0 and 1 as constants
    past_k, past_v = empty_cache(c, 2, 4)
    batch, new, past = (torch.export.Dim(n, min=1, max=4096) for n in ("batch", "new", "past"))
    shapes = {"ids": {0: batch, 1: new}, "past_k": {1: batch, 3: past}, "past_v": {1: batch, 3: past}}
    with warnings.catch_warnings(), quiet_logs("torch.onnx"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            DecoderStep(gpt),
            (ids, past_k, past_v),
            input_names=["ids", "past_k", "past_v"],
            output_names=["logits", "present_k", "present_v"],
            dynamic_shapes=shapes,
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    model = program.model_proto
    for node in model.graph.node:  # the exporter's per-node debug records (FX nodes, stack paths): 60% of a small file
        del node.metadata_props[:]
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization: weights of MatMul/Gemm stored as int8, activations quantized per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_logs(""):  # the quantizer suggests shape pre-processing meant for vision models
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])


def export_hint(field: str, name: str) -> str:
    option = "--data.tokenizer" if field == "tokenizer" else f"--model.{field}"
    return f"pass {option} {name} to craft.export yourself to trust it"


def export(
    ckpt_path: Path, out: Path, int8: bool = False, trusted: dict[str, str | None] | None = None
) -> dict[str, Any]:
    """Write ``out`` from ``ckpt_path``. ``trusted`` maps a part field (or ``tokenizer``) to the
    import path the user names for it: the checkpoint may use that class (``craft/checkpoint.py``)."""
    from craft.checkpoint import PART_FIELDS, read_checkpoint
    from craft.module import LanguageModel

    trusted = trusted or {}
    checkpoint = read_checkpoint(ckpt_path, trusted, export_hint)  # weights_only, and no names imported
    if out.exists() and any(out.iterdir()):
        raise CraftError(f"{out} exists and is not empty; pick a new --out (nothing was overwritten)")
    parts = {f: trusted[f] for f in PART_FIELDS if trusted.get(f)}
    lm = LanguageModel.load_from_checkpoint(
        ckpt_path, map_location="cpu", weights_only=True, tokenizer=trusted.get("tokenizer"), **parts
    )
    # Write into a temporary sibling and rename at the end: a failed export leaves nothing behind.
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        export_onnx(lm.model, tmp / "model.onnx")
        files = ["model.onnx"]
        if int8:
            quantize_int8(tmp / "model.onnx", tmp / "model.int8.onnx")
            files.append("model.int8.onnx")
        tokenizer = lm._require_tokenizer()
        (tmp / "tokenizer.json").write_text(json.dumps(tokenizer.state(), ensure_ascii=False))
        shutil.copy(Path(__file__).with_name("runtime.py"), tmp / "run.py")
        hp = lm.hparams
        c = lm.config
        manifest = {
            "format": "craft-onnx-decoder/1",
            "craft_version": craft.__version__,
            "torch_version": torch.__version__,
            "opset": OPSET,
            "source_checkpoint": str(ckpt_path),
            "source_sha256": hashlib.sha256(ckpt_path.read_bytes()).hexdigest(),
            "global_step": int(checkpoint.get("global_step", 0)),
            "files": {f: (tmp / f).stat().st_size for f in [*files, "tokenizer.json"]},
            "vocab_size": c.vocab_size,
            "block_size": c.block_size,
            "n_layers": c.n_layers,
            "n_head": c.n_head,
            "head_size": c.head_size,
            "architecture": {k: getattr(c, k) for k in ARCHITECTURE_FIELDS},
            "tokenizer": tokenizer.kind,
            "sampling": {
                "temperature": hp.temperature,
                "top_k": hp.top_k,
                "top_p": hp.top_p,
                "seed": hp.seed,
                "max_new_tokens": hp.max_new_tokens,
            },
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m craft.export", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a craft checkpoint (.ckpt)")
    parser.add_argument("--out", type=Path, required=True, help="folder to create (must not exist or be empty)")
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic int8 quantization)")
    for field in PART_FIELDS:
        parser.add_argument(
            f"--model.{field}",
            dest=field,
            metavar="IMPORT_PATH",
            help=f"trust this {field} class if the checkpoint names it",
        )
    parser.add_argument(
        "--data.tokenizer",
        dest="tokenizer",
        metavar="IMPORT_PATH",
        help="trust this tokenizer class if the checkpoint names it",
    )
    args = parser.parse_args(argv)
    trusted = {f: getattr(args, f) for f in (*PART_FIELDS, "tokenizer")}
    try:
        manifest = export(args.ckpt_path, args.out, args.int8, trusted)
    except CraftError as e:
        print(f"craft.export: error: {e}", file=sys.stderr)
        sys.exit(2)
    sizes = ", ".join(
        f"{f} {n / 1e6:.2f} MB" if n > 1e5 else f"{f} {n / 1e3:.1f} kB" for f, n in manifest["files"].items()
    )
    print(f"craft.export: wrote {args.out} ({sizes})")
    print(f"run it: python -m craft.runtime {args.out} --prompt 'The '  (or python {args.out}/run.py ...)")


if __name__ == "__main__":
    main()
