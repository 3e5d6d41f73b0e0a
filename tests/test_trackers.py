"""Tracker presets: a tiny run's scalars, full config and samples read back from each tracker's storage."""

import csv
import json

import pytest
import yaml

from craft import trackers
from craft.cli import main
from tests.helpers import ROOT, scalars, tiny_args


def run(corpus, logs, tracker: str, *extra: str) -> None:
    preset = ["--config", str(ROOT / "configs" / "presets" / f"{tracker}.yaml")]
    args = tiny_args(corpus, logs, "--samples.every_n_steps", "5", "--samples.sampling.max_new_tokens", "8", *extra)
    main(["fit", *preset, *args, "--trainer.max_steps", "10"])


def test_csv_preset_logs_the_scalars_and_the_full_config(tiny_run, tmp_path):
    _, corpus = tiny_run
    run(corpus, tmp_path / "logs", "csv", "--model.lr", "0.002")
    folder = tmp_path / "logs" / "tiny" / "csv"
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    val = {int(r["step"]): float(r["val/loss"]) for r in rows if r.get("val/loss")}
    assert val == pytest.approx(scalars(tmp_path / "logs" / "tiny", "val/loss"), abs=1e-6)  # TensorBoard's too
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["model"]["lr"] == 0.002 and config["trainer"]["max_steps"] == 10 and config["tracker"] == "csv"
    assert config["data"]["path"] == str(corpus)  # the whole config, not only the model's hyperparameters


@pytest.mark.slow
def test_mlflow_preset_logs_scalars_config_and_samples_to_a_sqlite_store(tiny_run, tmp_path):
    mlflow = pytest.importorskip("mlflow", reason="pip install craft[trackers] (mlflow)")
    _, corpus = tiny_run
    run(corpus, tmp_path / "logs", "mlflow")
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'logs' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "tiny"]
    (found,) = client.search_runs([experiment.experiment_id])
    history = {m.step: m.value for m in client.get_metric_history(found.info.run_id, "val/loss")}
    assert history == pytest.approx(scalars(tmp_path / "logs" / "tiny", "val/loss"), abs=1e-6)
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.yaml", "samples"} <= artifacts
    config = yaml.safe_load(open(client.download_artifacts(found.info.run_id, "config.yaml", str(tmp_path))))
    assert config["tracker"] == "mlflow" and config["data"]["path"] == str(corpus)
    samples = [a.path for a in client.list_artifacts(found.info.run_id, "samples")]
    assert any(p.endswith("step0000005_0.txt") for p in samples)


def wandb_records(path):
    """The protobuf records of an offline W&B run file: a LevelDB-format log (32 KB blocks, records
    with a 7-byte header, split across blocks as first/middle/last) after a 7-byte W&B header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, parts = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's zero-padded tail
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(parts)
            yield record
            parts = b""


@pytest.mark.slow
def test_wandb_preset_writes_an_offline_run_with_scalars_config_and_samples(tiny_run, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="pip install craft[trackers] (wandb)")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the preset's default: offline
    _, corpus = tiny_run
    run(corpus, tmp_path / "logs", "wandb")
    wandb.finish()  # what the end of a `python -m craft` process does
    (folder,) = (tmp_path / "logs" / "tiny" / "wandb").glob("offline-run-*")
    (log,) = folder.glob("run-*.wandb")
    config, history = {}, {}
    for record in wandb_records(log):
        if record.HasField("config"):
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        if record.HasField("history"):
            items = {
                (item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item
            }
            if "val/loss" in items:
                history[items["trainer/global_step"]] = items["val/loss"]
    assert config["tracker"] == "wandb" and config["data"]["path"] == str(corpus)  # the full config
    tensorboard = scalars(tmp_path / "logs" / "tiny", "val/loss")
    assert sorted(history.values()) == pytest.approx(sorted(tensorboard.values()), abs=1e-6)
    assert list((folder / "files" / "media" / "table").glob("samples/0_*.table.json"))  # the samples


def test_a_tracker_whose_library_is_missing_is_one_line(tiny_run, tmp_path, monkeypatch, capsys):
    _, corpus = tiny_run
    monkeypatch.setitem(trackers.TRACKERS, "mlflow", "no_such_library_craft")  # as where mlflow is absent
    with pytest.raises(SystemExit) as e:
        run(corpus, tmp_path / "logs", "mlflow")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "craft: error: tracker mlflow needs the no_such_library_craft package: "
        "pip install no_such_library_craft (or craft[trackers])"
    )
