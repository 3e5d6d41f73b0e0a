"""Run the CLI under tcmalloc when it is installed: faster CPU training and a lower memory peak.

glibc's malloc either returns each freed activation buffer to the kernel (and pays thousands of
page faults to get it back next step) or keeps freed memory in a fragmented heap; on the got_char
run that is 1.06x slower and ~0.4 GB more peak memory than tcmalloc, the allocator PyTorch's CPU
performance guide recommends (``benchmarks/README.md``). An allocator must be loaded before the
process starts, so ``python -m craft`` re-executes itself once with ``LD_PRELOAD`` set, as
PyTorch's own CPU launcher (``torch.backends.xeon.run_cpu``) does.

``CRAFT_ALLOCATOR=system`` keeps glibc's malloc; ``CRAFT_ALLOCATOR=/path/to/lib.so`` preloads
that library instead. Nothing happens off Linux, when no tcmalloc is installed (Debian / Ubuntu:
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


def reexec_with_allocator() -> None:
    """Replace this process by the same command with the allocator preloaded; returns if none applies."""
    lib = chosen_library(dict(os.environ))
    if lib is None:
        return
    if "/" in lib and not os.path.exists(lib):
        print(f"craft: error: {ENV}={lib}: no such file; give an installed allocator or 'system'", file=sys.stderr)
        sys.exit(2)
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    env[_DONE] = lib
    # tcmalloc reports every allocation above 1 GB on stderr by default; a big vocabulary's logits
    # can be that large without anything being wrong.
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    print(f"craft: using {lib} as the memory allocator ({ENV}=system to keep glibc's)", file=sys.stderr, flush=True)
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
