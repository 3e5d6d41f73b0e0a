"""The analysis notebook runs top to bottom against a real tiny run, so it cannot rot."""

import nbformat
import pytest
from nbclient import NotebookClient

from craft.cli import main
from tests.helpers import ROOT, tiny_args

pytestmark = pytest.mark.slow  # executes the whole analysis notebook


def test_analyze_runs_notebook_executes(corpus, tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "10", "--samples.every_n_steps", "5"])
    main(["fit", *tiny_args(corpus, logs, experiment="other"), "--trainer.max_steps", "5"])
    figures = tmp_path / "figures"
    monkeypatch.setenv("CRAFT_LOGS", str(logs))
    monkeypatch.setenv("CRAFT_FIGURES", str(figures))
    nb = nbformat.read(ROOT / "notebooks" / "analyze_runs.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "tiny" in out and "other" in out
    assert "=== samples/0 at step 5" in out
    assert (figures / "loss_curves.png").stat().st_size > 10_000
