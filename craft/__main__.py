"""``python -m craft VERB`` (and the ``craft`` command): every verb craft has, under one entry point.

The verb is read before anything heavy is imported: ``run`` needs numpy and onnxruntime only, so it
works where PyTorch is not installed. The training verbs are LightningCLI's (``craft/cli.py``), the
others are small argparse tools with the same flag style (underscores) and the same one-line errors.
The process runs under tcmalloc where it is installed (``craft/allocator.py``).
"""

from __future__ import annotations

import sys

PROG = "python -m craft"

# verb -> (module whose ``main(argv, prog)`` runs it, one line of help). LightningCLI's four first.
VERBS = {
    "fit": ("craft.cli", "train a model, or resume one exactly (--ckpt_path last)"),
    "validate": ("craft.cli", "score a checkpoint on the validation split"),
    "test": ("craft.cli", "score a checkpoint on the test split (data.test_fraction), reported as test/*"),
    "predict": ("craft.cli", "generate text from a checkpoint (--data.prompts)"),
    "export": ("craft.export", "write a checkpoint as ONNX (+ int8, a web page) or a Hugging Face folder"),
    "compare": ("craft.compare", "train and compare configs over seeds from a study file (mean, std, p)"),
    "run": ("craft.runtime", "generate from an exported folder with numpy + onnxruntime only (no PyTorch)"),
}
TRAINING = ("fit", "validate", "test", "predict")


def usage() -> str:
    width = max(map(len, VERBS))
    lines = [f"usage: {PROG} VERB [options]", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {text}" for verb, (_, text) in VERBS.items()]
    lines += ["", f"{PROG} VERB --help lists a verb's options; README.md has a tour."]
    return "\n".join(lines)


def main(argv: list[str] | None = None, allocator: bool = False) -> None:
    """Run the verb ``argv[0]``; with ``allocator``, first re-execute under tcmalloc (``run()``)."""
    given = argv
    argv = sys.argv[1:] if argv is None else list(argv)
    verb = argv[0] if argv else None
    if verb in (None, "-h", "--help"):
        print(usage())
        return
    if verb == "--version":
        from craft import __version__

        print(f"craft {__version__}")
        return
    if verb not in VERBS:
        print(f"craft: error: unknown verb {verb!r}: use one of {', '.join(VERBS)} ({PROG} --help)", file=sys.stderr)
        sys.exit(2)
    if allocator:
        from craft.allocator import reexec_with_allocator

        reexec_with_allocator()  # before torch is imported: an allocator is only taken at process start
    if verb in TRAINING:
        from craft.cli import main as cli_main

        cli_main(given)  # LightningCLI reads the verb itself (from sys.argv when none were given)
        return
    module = __import__(VERBS[verb][0], fromlist=["main"])
    module.main(argv[1:], prog=f"{PROG} {verb}")


def run() -> None:
    main(allocator=True)


if __name__ == "__main__":
    run()
