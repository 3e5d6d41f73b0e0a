"""Never lose a run: signals, atomic checkpoints, loud failed saves, non-finite loss, safe loading."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import craft.callbacks.checkpoint as ckpt_module
from craft import LanguageModel
from craft.cli import main
from tests.helpers import ROOT, python_cmd, tiny_args


def last_step(logs: Path) -> int | None:
    path = logs / "tiny" / "checkpoints" / "last.ckpt"
    if not path.exists():
        return None
    return torch.load(path, weights_only=True)["global_step"]


def start(args: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, **kw)


def wait_for_checkpoint(logs: Path, proc: subprocess.Popen, timeout: float = 120, newer_than=None) -> None:
    """Wait until `proc` has written a checkpoint (a newer one than `newer_than`): it is training."""
    deadline = time.time() + timeout
    while last_step(logs) == newer_than:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "no checkpoint written in time"
        time.sleep(0.2)


# Validation and sampling take most of each step here, so a signal often lands inside them.
BUSY = [
    "--trainer.max_steps",
    "100000",
    "--trainer.val_check_interval",
    "2",
    "--trainer.limit_val_batches",
    "40",
    "--samples.every_n_steps",
    "3",
    "--samples.sampling.max_new_tokens",
    "300",
    "--checkpoint.last_every_n_steps",
    "2",
]


PHASES = {
    "training": ["--trainer.limit_val_batches", "0", "--samples.every_n_steps", "0", "--samples.at_end", "false"],
    # half the corpus held out and every batch validated: validation takes most of the time
    "validation": [
        "--data.val_fraction",
        "0.5",
        "--trainer.val_check_interval",
        "2",
        "--trainer.limit_val_batches",
        "1.0",
        "--samples.every_n_steps",
        "0",
        "--samples.at_end",
        "false",
    ],
    "sample generation": [
        "--trainer.limit_val_batches",
        "0",
        "--samples.every_n_steps",
        "2",
        "--samples.sampling.max_new_tokens",
        "3000",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "phase, signum, code",
    [("training", signal.SIGINT, 130), ("validation", signal.SIGTERM, 143), ("sample generation", signal.SIGINT, 130)],
)
def test_signal_saves_last_ckpt_exits_and_resumes(corpus, tmp_path, phase, signum, code):
    """A real signal arrives while the real `python -m craft fit` is in `phase`."""
    logs = tmp_path / "logs"
    sender = json.dumps({"class_path": "tests.helpers.SignalDuring", "init_args": {"phase": phase, "signum": signum}})
    run = subprocess.run(
        [
            *python_cmd(),
            "fit",
            *tiny_args(corpus, logs),
            *PHASES[phase],
            "--trainer.max_steps",
            "100000",
            "--checkpoint.last_every_n_steps",
            "50",
            "--trainer.callbacks+",
            sender,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert run.returncode == code, run.stderr[-3000:]
    assert f"{signal.Signals(signum).name} received during {phase}" in run.stderr
    assert "Traceback" not in run.stderr and "resume with --ckpt_path last" in run.stderr
    stopped_at = last_step(logs)
    assert stopped_at is not None and stopped_at >= 3  # saved at the stop, not at a periodic checkpoint
    resumed = subprocess.run(
        [
            *python_cmd(),
            "fit",
            *tiny_args(corpus, logs),
            *PHASES[phase],
            "--ckpt_path",
            "last",
            "--trainer.max_steps",
            str(stopped_at + 2),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at global step {stopped_at}" in resumed.stderr  # craft's note
    assert last_step(logs) == stopped_at + 2


@pytest.mark.slow
def test_second_ctrl_c_aborts_at_once_and_last_ckpt_still_loads(corpus, tmp_path):
    logs = tmp_path / "logs"
    proc = start([*python_cmd(), "fit", *tiny_args(corpus, logs), *BUSY])
    wait_for_checkpoint(logs, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "aborting now" in err or "craft: stopped" in err
    assert last_step(logs) is not None  # loads with weights_only


SLOW_WRITER = """
import sys, time
import craft.callbacks.checkpoint as c
def slow(path, data):
    with open(path, "wb") as f:
        for i in range(0, len(data), len(data) // 4 + 1):
            f.write(data[i:i + len(data) // 4 + 1]); f.flush(); time.sleep(0.05)
c.write_bytes_durably = slow
from craft.cli import main
sys.argv = ["craft"] + sys.argv[1:]
main()
"""


@pytest.mark.slow
def test_kill_9_during_saves_never_corrupts_last_ckpt(corpus, tmp_path):
    """Saves every step through a slowed writer; kill -9 at random moments, again and again."""
    logs = tmp_path / "logs"
    folder = logs / "tiny" / "checkpoints"
    rng = random.Random(0)
    steps, stray_left, stray = [], 0, []
    for _ in range(8):
        resume = ["--ckpt_path", "last"] if (folder / "last.ckpt").exists() else []
        before = last_step(logs)
        proc = start(
            [
                sys.executable,
                "-c",
                SLOW_WRITER,
                "fit",
                *tiny_args(corpus, logs),
                "--trainer.max_steps",
                "100000",
                "--checkpoint.last_every_n_steps",
                "1",
                *resume,
            ]
        )
        deadline = time.time() + 120
        while last_step(logs) == before:  # this process is training and saving now
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.time() < deadline
            time.sleep(0.1)
        assert not [p for p in stray if p.exists()], "stray temp files of the killed run were not removed"
        time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        proc.wait()
        stray = list(folder.glob(".*.tmp-*"))
        stray_left += bool(stray)
        step = last_step(logs)  # torch.load raises if the file were torn
        assert step is not None and step > 0
        steps.append(step)
    print(f"\nkill -9: last.ckpt at steps {steps} after each kill; {stray_left} of 8 kills landed inside a save")
    assert steps == sorted(steps), "a kill left an older checkpoint than the one before it"
    assert stray_left >= 1, "no kill landed inside a save: the test no longer exercises a torn write"


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES])
def test_failed_save_is_loud_and_keeps_the_previous_checkpoint(corpus, tmp_path, monkeypatch, capsys, err):
    """The OS error is injected at the write (root ignores permissions and tmpfs is large here)."""
    logs = tmp_path / "logs"
    main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "5"])
    last = logs / "tiny" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    def failing_write(path, data):
        raise OSError(err, os.strerror(err), str(path))

    monkeypatch.setattr(ckpt_module, "write_bytes_durably", failing_write)
    with pytest.raises(SystemExit) as e:
        main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "10", "--ckpt_path", "last"])
    assert e.value.code == 2
    msg = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        msg
        == f"craft: error: could not save checkpoint {last}: {os.strerror(err)} (the previous checkpoint there is kept)"
    )
    assert last.read_bytes() == before
    assert not list(last.parent.glob(".*.tmp-*"))


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(corpus, tmp_path, capsys):
    logs = tmp_path / "logs"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "fit",
                *tiny_args(corpus, logs),
                "--trainer.max_steps",
                "50",
                "--model.lr",
                "1e30",
                "--model.warmup_steps",
                "0",
                "--checkpoint.last_every_n_steps",
                "1",
            ]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "craft: error: non-finite" in err and "at global step" in err
    failed_at = int(err.split("at global step ")[1].split()[0].rstrip(";"))
    saved = torch.load(logs / "tiny" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] <= failed_at
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())


def test_every_checkpoint_craft_writes_loads_with_weights_only(corpus, tmp_path):
    logs = tmp_path / "logs"
    main(["fit", *tiny_args(corpus, logs), "--trainer.max_steps", "10"])
    files = list((logs / "tiny" / "checkpoints").glob("*.ckpt"))
    assert len(files) >= 2
    for f in files:
        torch.load(f, weights_only=True)


def test_malicious_checkpoint_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"vocab_size": 3}, "tokenizer": Payload()}, evil)
    out = subprocess.run(
        [*python_cmd(), "predict", "--ckpt_path", str(evil)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 2
    assert f"cannot load checkpoint {evil}" in out.stderr and "Traceback" not in out.stderr
    assert "Weights only load failed" in out.stderr
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        LanguageModel.load_from_checkpoint(evil)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # proof the file is hostile: unsafe loading runs its code
    assert marker.exists()
