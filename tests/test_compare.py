"""python -m craft.compare: real runs, a table and a plot, and a rerun that reuses finished work."""

import json
import subprocess
import sys

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import ROOT, TINY_MODEL

pytestmark = pytest.mark.slow  # several full runs


def test_compare_writes_table_plot_and_reuses_finished_runs(corpus, tmp_path):
    base = tmp_path / "tiny.yaml"
    flags = dict(zip(TINY_MODEL[::2], TINY_MODEL[1::2], strict=True))
    base.write_text(
        yaml.safe_dump(
            {
                "model": {k.split(".")[1]: int(v) for k, v in flags.items()} | {"warmup_steps": 2},
                "data": {"path": str(corpus), "block_size": 16, "batch_size": 8},
                "trainer": {"enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1},
            }
        )
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "title": "tiny",
                "base": [str(base)],
                "tokens": 16 * 8 * 12,  # 12 steps
                "evals": 3,
                "log_dir": str(tmp_path / "logs"),
                "out": str(tmp_path / "out"),
                "sample_tokens": 10,
                "runs": {"char": [], "bpe": [str(ROOT / "configs/presets/bpe.yaml")]},
            },
            sort_keys=False,
        )
    )
    cmd = [sys.executable, "-m", "craft.compare", str(spec)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())["runs"]
    assert [r["name"] for r in results] == ["char", "bpe"]
    for r in results:
        assert r["global_step"] == 12
        acc = EventAccumulator(str(tmp_path / "logs" / r["name"]))
        acc.Reload()
        bpc = acc.Scalars("val/bpc")
        assert [e.step for e in bpc] == [3, 7, 11]  # evenly spaced: after steps 4, 8, 12 (logged 0-based)
        assert r["curve"]["tokens"] == [4 * 128, 8 * 128, 12 * 128]
        assert r["curve"]["val_bpc"] == [e.value for e in bpc]
        assert abs(r["val_bpc"] - bpc[-1].value) < 1e-3
        assert r["sample"].startswith("The ")
    table = (tmp_path / "out" / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| char ") or line.startswith("| bpe ")]
    assert len(rows) == 2 and f"{results[1]['val_bpc']:.3f}" in rows[1]
    assert (tmp_path / "out" / "results.png").read_bytes()[:4] == b"\x89PNG"

    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished earlier, reusing") == 2
