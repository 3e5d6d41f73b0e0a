"""Export a checkpoint to a folder that runs without PyTorch (ONNX + numpy + onnxruntime), or to HF.

    python -m craft export --ckpt_path logs/got_char_1M_ctx256_bs64/checkpoints/last.ckpt --out export/got_char --int8
    python -m craft export --format hf --ckpt_path ... --out export/got_char_hf

The ONNX folder holds ``model.onnx`` (``GPT.forward`` with its KV cache, traced: one decoder step
that takes and returns the cache buffers, then optimized by onnxruntime's own graph fusions),
``model.int8.onnx`` with ``--int8`` (onnxruntime dynamic int8 quantization of the matmul weights),
``tokenizer.json``, ``manifest.json`` and ``run.py``: a copy of ``craft/runtime.py`` (with
``craft_sampling.py``, a copy of ``craft/sampling.py``), so ``python run.py --prompt "..."`` works
on a machine that has only numpy and onnxruntime. With ``--web`` it also holds a static page
(``index.html``, ``craft.js`` and onnxruntime-web) that generates in a browser.

One module per job: ``trace.py`` (GPT.forward to ONNX, with the export-only fused parts),
``rewrite.py`` (graph rewrites), ``optimize.py`` (onnxruntime's fusions, optimization, parity check
and int8), ``web.py`` (the page and its sampling loop graph), ``hf.py`` (the ``transformers``
folder). This file reads the checkpoint once, builds the model, and hands it to the writer of the
format asked for; what it writes appears under ``out`` only when all of it is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import craft
from craft.checkpoint import PART_FIELDS, option, read_checkpoint
from craft.errors import CraftError, OneLineParser, run_verb
from craft.export.optimize import check_parity, quantize_int8, save_ort_optimized
from craft.export.trace import FUSED_HEAD_MULTIPLE, OPSET, buffer_names, can_fuse, export_onnx
from craft.export.web import ORT_WEB_FILES, check_web, draw_nodes, write_loop, write_web

if TYPE_CHECKING:
    from craft.module import LanguageModel

__all__ = [
    "FORMAT",
    "OPSET",
    "ORT_WEB_FILES",
    "buffer_names",
    "can_fuse",
    "check_parity",
    "check_web",
    "draw_nodes",
    "export",
    "export_onnx",
    "main",
    "save_ort_optimized",
    "write_loop",
]

# /2: the cache is one fixed-size key and value buffer per layer (inputs k_i, v_i; outputs k_i_out, v_i_out).
# /3: attention may be onnxruntime's fused node (manifest "attention": "fused"), which needs the
#     positions of one call to be consecutive, and to start at 0 when there is more than one.
# /4: the manifest's "architecture" is GPTConfig and its "sampling" SamplingConfig, each whole.
FORMAT = "craft-onnx-decoder/4"
CRAFT = Path(__file__).parents[1]  # runtime.py and sampling.py are copied from here


def export_hint(field: str, name: str) -> str:
    return f"pass {option(field)} {name} to craft export yourself to trust it"


def export(
    ckpt_path: Path,
    out: Path,
    int8: bool = False,
    trusted: dict[str, str | None] | None = None,
    format: str = "onnx",
    web: bool = False,
) -> dict[str, Any]:
    """Write ``out`` from ``ckpt_path``: the ONNX folder, or with ``format="hf"`` a ``transformers``
    model folder (``hf.py``). ``trusted`` maps a part field (or ``tokenizer``) to the import path
    the user names for it: the checkpoint may use that class (``craft/checkpoint.py``). Returns
    the manifest (for hf: the files written)."""
    from craft.module import LanguageModel

    trusted = trusted or {}
    if format == "hf" and int8:
        raise CraftError("--int8 is for --format onnx; a transformers model quantizes on loading")
    if format != "onnx" and web:
        raise CraftError("--web is for --format onnx: the page runs the ONNX decoder")
    checkpoint = read_checkpoint(ckpt_path, trusted, export_hint)  # weights_only, and no names imported
    if out.exists() and any(out.iterdir()):
        raise CraftError(f"{out} exists and is not empty; pick a new --out (nothing was overwritten)")
    if format == "hf":
        from craft.export.hf import target

        target(checkpoint["hyper_parameters"])  # refuse before building or writing anything
    named = {f: trusted[f] for f in PART_FIELDS if trusted.get(f)}
    lm = LanguageModel.from_checkpoint(checkpoint, tokenizer=trusted.get("tokenizer"), **named)
    if web:
        check_web(lm.require_tokenizer().kind)  # before the minute of tracing and optimizing
        if not can_fuse(lm.config):
            raise CraftError(
                f"--web needs the fused attention node, which takes head sizes that are multiples of "
                f"{FUSED_HEAD_MULTIPLE} (this model's is {lm.config.head_size}); export without --web"
            )
    # Write into a new temporary sibling and rename at the end: a failed export leaves nothing
    # behind, and no folder that was there before is touched.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        if format == "hf":
            from craft.export.hf import export_hf

            files = export_hf(lm.model, lm.require_tokenizer(), tmp)
            manifest = {"format": "hf", "files": {f: (tmp / f).stat().st_size for f in files}}
        else:
            manifest = write_onnx(lm, tmp, int8, web, source=ckpt_path, step=int(checkpoint.get("global_step", 0)))
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when it became out
    return manifest


def write_onnx(lm: LanguageModel, folder: Path, int8: bool, web: bool, source: Path, step: int) -> dict[str, Any]:
    """The ONNX folder's files into ``folder``; returns its manifest."""
    parts = ", ".join(f"{f} {getattr(lm.config, f)}" for f in PART_FIELDS)  # for error messages
    fused = can_fuse(lm.config)
    try:
        export_onnx(lm.model, folder / "traced.onnx", fused=fused)
    except Exception as e:  # the exporter's own errors are pages long: give the first line
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise CraftError(
            f"cannot export {source}: torch.export could not trace GPT.forward with this model's parts "
            f"({parts}): {first[:300]}; a part named by import path must be traceable (positions as tensors, "
            "no Python values read from tensors)"
        ) from None
    save_ort_optimized(folder / "traced.onnx", folder / "model.onnx")
    try:
        check_parity(lm.model, folder / "model.onnx")
    except CraftError as e:
        raise CraftError(f"cannot export {source} ({parts}): {e}") from None
    files = ["model.onnx"]
    if int8:
        # Quantize the traced graph (its weights still plain initializers), then optimize: the
        # quantized matmuls fuse into one node each.
        quantize_int8(folder / "traced.onnx", folder / "traced.int8.onnx")
        save_ort_optimized(folder / "traced.int8.onnx", folder / "model.int8.onnx")
        files.append("model.int8.onnx")
    for f in ("traced.onnx", "traced.int8.onnx"):
        (folder / f).unlink(missing_ok=True)
    tokenizer = lm.require_tokenizer()
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer.state(), ensure_ascii=False))
    shutil.copy(CRAFT / "runtime.py", folder / "run.py")
    shutil.copy(CRAFT / "sampling.py", folder / "craft_sampling.py")  # run.py's one import
    page = []
    if web:
        for f in files:  # the page's own graphs: the step inside a Loop
            write_loop(folder / f, folder / f.replace(".onnx", ".loop.onnx"), lm.config.n_layers)
            page.append(f.replace(".onnx", ".loop.onnx"))
        page += write_web(folder, tokenizer.kind)
    return {
        "format": FORMAT,
        "craft_version": craft.__version__,
        "torch_version": torch.__version__,
        "opset": OPSET,
        "source_checkpoint": str(source),
        "source_sha256": sha256(source),
        "global_step": step,
        "files": {f: (folder / f).stat().st_size for f in [*files, "tokenizer.json", *page]},
        # fused: GroupQueryAttention, in place when a buffer is bound as input and output
        "attention": "fused" if fused else "masked",
        "architecture": dataclasses.asdict(lm.config),
        "tokenizer": tokenizer.kind,
        "sampling": lm.sampling.as_dict(),
    }


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def main(argv: list[str] | None = None, prog: str = "python -m craft export") -> None:
    parser = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a craft checkpoint (.ckpt)")
    parser.add_argument("--out", type=Path, required=True, help="folder to create (must not exist or be empty)")
    parser.add_argument(
        "--format",
        choices=("onnx", "hf"),
        default="onnx",
        help="onnx: a folder that runs without PyTorch (default); hf: a transformers model folder",
    )
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic int8 quantization)")
    parser.add_argument(
        "--web",
        action="store_true",
        help="also write a static page (index.html) that generates in a browser with onnxruntime-web",
    )
    fields = (*PART_FIELDS, "tokenizer")
    for field in fields:
        parser.add_argument(
            option(field), dest=field, metavar="IMPORT_PATH", help=f"trust this {field} class if the ckpt names it"
        )
    args = parser.parse_args(argv)
    trusted = {f: getattr(args, f) for f in fields}
    manifest = run_verb(lambda: export(args.ckpt_path, args.out, args.int8, trusted, args.format, web=args.web))
    sizes = ", ".join(
        f"{f} {n / 1e6:.2f} MB" if n > 1e5 else f"{f} {n / 1e3:.1f} kB" for f, n in manifest["files"].items()
    )
    print(f"craft: wrote {args.out} ({sizes})")
    if args.format == "hf":
        print(f"load it: AutoModelForCausalLM.from_pretrained({str(args.out)!r}) and AutoTokenizer, from transformers")
    else:
        print(f"run it: python -m craft run {args.out} --prompt 'The '  (or python {args.out}/run.py ...)")
        if args.web:
            print(f"in a browser: python -m http.server -d {args.out} 8000, then open http://localhost:8000/")
