"""Resident memory of this process, read from /proc (Linux) without extra packages; and of one
measured child process."""

import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path


def rss_bytes() -> int:
    """Current resident set size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measured_child(cmd: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None) -> dict:
    """Run one benchmark process whose last stdout line is JSON; add its own peak resident memory
    (``peak_rss_process``, from wait4: not the maximum over all children so far) and its wall time
    (``seconds``). A failure raises SystemExit with the end of its stderr."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=cwd, env=env)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"benchmark failed: {' '.join(cmd)}\n{err.read()[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_process"] = usage.ru_maxrss * 1024
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result
