"""Write docs/errors.md: every bad-input case run through the real `python -m craft`, with its message.

python docs/gen_errors.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.bad_inputs import CASES, train_checkpoint  # noqa: E402


def message(stderr: str, expect: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    hit = next((line for line in reversed(lines) if expect in line), lines[-1] if lines else "")
    return hit.strip()


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        trained = Path(tmp) / "trained"
        trained.mkdir()
        os.chdir(trained)
        train_checkpoint(trained)
        for i, case in enumerate(CASES):
            folder = Path(tmp) / f"case{i}"
            if case.needs_checkpoint:
                shutil.copytree(trained, folder)
            folder.mkdir(exist_ok=True)
            args = case.args(folder)
            run = subprocess.run(
                [sys.executable, "-m", "craft", *args],
                capture_output=True,
                text=True,
                cwd=folder,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            text = message(run.stderr + run.stdout, case.expect).replace(str(folder) + "/", "")
            cell = text.replace("|", "\\|")
            rows.append(f"| {case.group} | {case.name} | {run.returncode} | `` {cell} `` |")
    doc = [
        "# Errors for bad input",
        "",
        "Each row is a test in `tests/test_bad_input.py` (message, exit code, and that no file on disk changed).",
        "Messages below come from running each case through `python -m craft` (or `craft.export`); regenerate with",
        "`python docs/gen_errors.py`. Errors are one line with exit code 2; `CRAFT_DEBUG=1` shows the traceback.",
        "Rows with exit code 0 are warnings: the command goes on with the stated fix.",
        "",
        "| input | case | exit | message |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
    (ROOT / "docs" / "errors.md").write_text("\n".join(doc))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
