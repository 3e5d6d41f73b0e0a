"""Run the CLI under tcmalloc when it is installed: faster CPU training and a lower memory peak.

glibc's malloc either returns each freed activation buffer to the kernel (and pays page faults to
get it back next step) or keeps freed memory in a fragmented heap; tcmalloc, the allocator
PyTorch's CPU performance guide recommends, does neither (measured in ``benchmarks/README.md``).
An allocator must be loaded before the process starts, so ``python -m craft`` re-executes itself
once with ``LD_PRELOAD`` set, as PyTorch's own CPU launcher (``torch.backends.xeon.run_cpu``) does,
and says so in one line on stderr.

``python -m craft.allocator CMD ...`` runs any command the same way: ``make test`` runs pytest
under it, so tests that call the CLI in-process see the allocator users get.
``CRAFT_ALLOCATOR=system`` keeps glibc's malloc; ``CRAFT_ALLOCATOR=/path/to/lib.so`` preloads that
library instead. Nothing happens off Linux, when no tcmalloc is installed (Debian / Ubuntu:
``apt install libtcmalloc-minimal4``), or when ``LD_PRELOAD`` already names an allocator.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

ENV = "CRAFT_ALLOCATOR"
_DONE = "_CRAFT_ALLOCATOR_SET"  # set in the re-executed process (and its children): never loop
KNOWN = ("tcmalloc", "jemalloc", "mimalloc")


def find_tcmalloc() -> str | None:
    """The soname of an installed tcmalloc (the minimal build first), or None."""
    return next((lib for lib in map(ctypes.util.find_library, ("tcmalloc_minimal", "tcmalloc")) if lib), None)


def chosen_library(environ: dict[str, str]) -> str | None:
    """The library to preload for this environment, or None to leave the process as it is."""
    choice = environ.get(ENV, "auto")
    if not sys.platform.startswith("linux") or choice == "system" or environ.get(_DONE):
        return None
    if any(name in environ.get("LD_PRELOAD", "") for name in KNOWN):
        return None  # the user chose an allocator already
    return find_tcmalloc() if choice == "auto" else choice


def allocator_env(environ: dict[str, str]) -> dict[str, str] | None:
    """``environ`` with the chosen allocator preloaded, or None to leave the process as it is."""
    lib = chosen_library(environ)
    if lib is None:
        return None
    if "/" in lib and not os.path.exists(lib):
        print(f"craft: error: {ENV}={lib}: no such file; give an installed allocator or 'system'", file=sys.stderr)
        sys.exit(2)
    env = dict(environ)
    env["LD_PRELOAD"] = " ".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    env[_DONE] = lib
    # tcmalloc reports every allocation above 1 GB on stderr by default; a big vocabulary's logits
    # can be that large without anything being wrong.
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    print(f"craft: using {lib} as the memory allocator ({ENV}=system to keep glibc's)", file=sys.stderr, flush=True)
    return env


def reexec_with_allocator() -> None:
    """Replace this process by the same command with the allocator preloaded; returns if none applies."""
    env = allocator_env(dict(os.environ))
    if env is not None:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def main(argv: list[str]) -> None:
    """``python -m craft.allocator CMD ...``: run CMD under the allocator ``python -m craft`` would use.

    ``make test`` runs pytest this way, so tests that call the CLI in-process measure and exercise
    the allocator users get."""
    if not argv:
        print("usage: python -m craft.allocator COMMAND [ARGS...]", file=sys.stderr)
        sys.exit(2)
    env = allocator_env(dict(os.environ)) or dict(os.environ)
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main(sys.argv[1:])
