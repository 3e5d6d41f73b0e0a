"""python -m craft compare: real runs, a table and a plot, and a rerun that reuses finished work."""

import json
import math
import shutil
import subprocess
import sys

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from craft.compare import Spec, mean_std, merged_config, reach, welch_p
from tests.helpers import ROOT, TINY_MODEL


def t_two_sided(t: float, df: float) -> float:
    """2 * P(T > |t|) for Student's t with ``df`` degrees of freedom, by Simpson's rule on the
    density (independent of scipy): P(T > t) = 1/2 - integral of the density from 0 to t."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    n, t = 20_000, abs(t)
    f = [c * (1 + (t * i / n) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
    area = t / n / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))
    return 2 * (0.5 - area)


def test_statistics_on_fixed_numbers():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([2.5]) == (2.5, 0.0)
    # Equal spreads: t = (2 - 5) / sqrt(1/3 + 1/3) = -3.674, df = 4 -> p = 0.0213.
    assert welch_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.021312, abs=1e-6)
    assert t_two_sided(-3 / math.sqrt(2 / 3), 4) == pytest.approx(0.021312, abs=1e-6)
    # Unequal spreads (the Welch case): means 2.12 and 2.05, variances 0.0004 and 0.0025, n = 3 each:
    # se^2 = 0.0029 / 3, t = 0.07 / sqrt(se^2) = 2.2514, df = se^4 / ((0.0004/3)^2/2 + (0.0025/3)^2/2) = 2.624.
    a, b = [2.10, 2.12, 2.14], [2.00, 2.05, 2.10]
    se2 = 0.0029 / 3
    t, df = 0.07 / math.sqrt(se2), se2**2 / ((0.0004 / 3) ** 2 / 2 + (0.0025 / 3) ** 2 / 2)
    assert t == pytest.approx(2.2514, abs=1e-4) and df == pytest.approx(2.624, abs=1e-3)
    assert welch_p(a, b) == pytest.approx(t_two_sided(t, df), abs=1e-5)
    assert 0.1 < welch_p(a, b) < 0.15  # three seeds each: a 0.07 bpc gap is not yet significant here
    assert welch_p([1.0], [2.0, 3.0]) is None  # one seed has no spread to test against


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "compare").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_comparison_names_real_configs_and_whole_evaluations(path):
    spec = Spec.load(path)
    for name in spec.runs:
        overlays, tokens, _ = spec.run(name)
        configs = [*spec.base, *overlays]
        missing = [c for c in configs if not (ROOT / c).is_file()]
        assert not missing, f"{path.name}: run {name!r} names missing configs {missing}"
        data = merged_config([str(ROOT / c) for c in configs])["data"]
        assert tokens // (data["batch_size"] * data["block_size"]) >= spec.evals, f"{path.name}: {name!r}"


def test_reach_interpolates_between_evaluations():
    curve = {"tokens": [100, 200, 300], "seconds": [10.0, 20.0, 30.0], "val_bpc": [3.0, 2.0, 1.5]}
    assert reach(curve, 2.5) == (150.0, 15.0)
    assert reach(curve, 1.5) == (300.0, 30.0)
    assert reach(curve, 3.5) == (100, 10.0)
    assert reach(curve, 1.0) is None


@pytest.mark.slow  # several full runs
def test_compare_runs_seeds_and_an_lr_grid_writes_statistics_and_reuses_finished_runs(corpus, tmp_path):
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
                "seeds": [5, 6],
                "lr_grid": [0.5, 2.0],
                "lr_grid_extend": 1,  # a 2-point grid's best is always at an edge: one more factor past it
                "int8_windows": 8,
                "log_dir": str(tmp_path / "logs"),
                "out": str(tmp_path / "out"),
                "sample_tokens": 10,
                "runs": {"char": [], "bpe": [str(ROOT / "configs/presets/bpe.yaml")]},
            },
            sort_keys=False,
        )
    )
    cmd = [sys.executable, "-m", "craft", "compare", str(spec)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    configs = json.loads((tmp_path / "out" / "results.json").read_text())["configs"]
    assert [c["name"] for c in configs] == ["char", "bpe"]
    for c in configs:
        # The grid ran on the first seed, grew one factor past its better end, and the best of the
        # three ran on the second.
        first_best = "0.5" if c["grid"]["0.5"] < c["grid"]["2.0"] else "2.0"
        assert set(c["grid"]) == {"0.5", "2.0", "0.125" if first_best == "0.5" else "8.0"}
        assert c["grid"][str(c["lr_factor"])] == min(c["grid"].values())
        assert [r["seed"] for r in c["seeds"]] == [5, 6] and {r["lr_factor"] for r in c["seeds"]} == {c["lr_factor"]}
        assert c["lr"] == pytest.approx(1e-3 * c["lr_factor"])
        for r in c["seeds"]:
            assert r["global_step"] == 12
            acc = EventAccumulator(str(tmp_path / "logs" / r["experiment"]))
            acc.Reload()
            bpc = acc.Scalars("val/bpc")
            assert [e.step for e in bpc] == [3, 7, 11]  # evenly spaced: after steps 4, 8, 12 (logged 0-based)
            assert r["curve"]["tokens"] == [4 * 128, 8 * 128, 12 * 128]
            assert r["curve"]["val_bpc"] == [e.value for e in bpc]
            assert abs(r["val_bpc"] - bpc[-1].value) < 1e-3
        finals = [r["val_bpc"] for r in c["seeds"]]
        assert c["bpc_mean"] == pytest.approx(sum(finals) / 2)
        assert c["bpc_std"] == pytest.approx(abs(finals[0] - finals[1]) / math.sqrt(2))
        assert c["sample"].startswith("The ")
        assert abs(c["int8"]["int8"] - c["int8"]["torch"]) < 0.05 and c["int8"]["windows"] == 8
    char, bpe = configs
    assert char["p"] is None and bpe["p"] == pytest.approx(
        welch_p([r["val_bpc"] for r in bpe["seeds"]], [r["val_bpc"] for r in char["seeds"]])
    )
    assert char["target"] == pytest.approx(char["bpc_mean"])  # default target: the baseline's mean
    table = (tmp_path / "out" / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| char ") or line.startswith("| bpe ")]
    assert len(rows) == 4  # the results table and the LR grid table
    assert f"{bpe['bpc_mean']:.4f} ± {bpe['bpc_std']:.4f}" in rows[1]
    assert (tmp_path / "out" / "results.png").read_bytes()[:4] == b"\x89PNG"

    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished earlier, reusing") == 8  # 2 configs x (3 grid points + 1 seed)

    # A fresh clone has the committed records and no logs/: the study carries on from the records,
    # trains nothing and writes the same results, samples and int8 scores included.
    records = sorted(p.name for p in (tmp_path / "out" / "runs").iterdir())
    assert len(records) == 8 and all(json.loads((tmp_path / "out" / "runs" / r).read_text())["plan"] for r in records)
    shutil.rmtree(tmp_path / "logs")
    fresh = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert fresh.stdout.count("out/runs/") == 8 and "craft fit" not in fresh.stdout
    assert not (tmp_path / "logs").exists()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["configs"] == configs


def test_a_finished_run_asked_for_with_another_plan_is_refused_and_left_as_it_was(tmp_path):
    from craft.compare import run_one
    from craft.errors import CraftError

    spec = Spec(base=["configs/quickstart.yaml"], runs={"a": []}, tokens=4096, log_dir=str(tmp_path))
    run = tmp_path / "a-s1337"
    run.mkdir()
    done = {"steps": 100, "seconds": None, "args": ["--seed_everything", "1337"], "config": {"model": {"lr": 1.0}}}
    (run / "compare_done.json").write_text(json.dumps(done) + "\n")
    (run / "summary.json").write_text('{"val_bpc": 2.0}\n')
    with pytest.raises(CraftError, match="finished with another config.*move that folder away"):
        run_one(spec, "a-s1337", [str(ROOT / "configs/quickstart.yaml")], 100, ["--seed_everything", "1337"], 4096)
    assert json.loads((run / "summary.json").read_text()) == {"val_bpc": 2.0}

    # The same for a run known only from its committed record (a fresh clone, no log folder).
    shutil.rmtree(run)
    spec.out = str(tmp_path / "out")
    record = spec.record_file("a-s1337")
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"plan": done, "summary": {"val_bpc": 2.0}, "curve": {}}) + "\n")
    with pytest.raises(CraftError, match="record .*a-s1337.json is of a run with another config.*move it away"):
        run_one(spec, "a-s1337", [str(ROOT / "configs/quickstart.yaml")], 100, ["--seed_everything", "1337"], 4096)
    assert json.loads(record.read_text())["summary"] == {"val_bpc": 2.0} and not run.exists()


def test_ablation_verdicts_read_a_removal_the_other_way():
    """docs/gen_speedrun.py: a row that adds a component helps when it is lower than modern; a row
    that removes one from the recipe means the component helps when the row is *higher*."""
    import importlib.util
    import statistics

    spec = importlib.util.spec_from_file_location("gen_speedrun", ROOT / "docs" / "gen_speedrun.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)

    def config(name, finals):
        seeds = [{"val_bpc": x} for x in finals]
        return {"name": name, "seeds": seeds, "bpc_mean": statistics.mean(finals), "bpc_std": statistics.stdev(finals)}

    modern, speedrun = config("modern", [2.00, 2.01, 2.02]), config("speedrun", [1.80, 1.81, 1.82])
    rows = [
        modern,
        config("add_lower", [1.90, 1.91, 1.92]),  # 0.1 below modern: t = 12.2 on 4 dof, p = 2.6e-4
        config("add_same", [2.02, 2.00, 2.01]),
        config("add_higher", [2.10, 2.11, 2.12]),
        speedrun,
        config("remove_higher", [1.90, 1.91, 1.92]),  # the recipe is worse without it: it helps
    ]
    table = {line.split(" | ")[0].strip("| "): line for line in gen.ablations(rows, None) if line.startswith("| ")}
    assert table["add_lower"].endswith("| 0.00026 | helps |")
    assert table["add_same"].endswith("| neutral |")
    assert table["add_higher"].endswith("| hurts |")
    assert table["remove_higher"].endswith("| helps |")
    assert "| speedrun |" in table["remove_higher"]
    # Without the whole ablation, the MLP rows alone are shown (they have no recipe row to remove from).
    partial = gen.ablations(None, rows[:4])
    assert partial[0].startswith("Not run yet") and any(line.startswith("| add_lower") for line in partial)
