"""One run per directory (minimt/io/rundir.py): a lock that names its holder, no silent mixing of two runs, a resume
that refuses settings which break exactness, and a metrics.jsonl that never holds one step twice."""
import json
import socket
import subprocess
import sys

import pytest

from minimt.io import rundir
from minimt.train import train
from test_train import config


def write_lock(run, pid):
    run.mkdir(parents=True, exist_ok=True)
    (run / rundir.LOCK).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "earlier"}))


def test_a_second_run_fails_at_once_and_names_the_holder(tmp_path, data_file, tiny_checkpoint):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path / "run", holder.pid)
        with pytest.raises(ValueError, match=f"in use by another training run \\(pid {holder.pid} on "):
            train(config(tmp_path, data_file, tiny_checkpoint, epochs=1))
        assert json.loads((tmp_path / "run" / rundir.LOCK).read_text())["pid"] == holder.pid  # still theirs
        assert not (tmp_path / "run" / "last").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_said(tmp_path, data_file, tiny_checkpoint, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_lock(tmp_path / "run", int(dead.stdout))
    train(config(tmp_path, data_file, tiny_checkpoint, epochs=1))
    assert "taking over a stale lock" in capsys.readouterr().out
    assert not (tmp_path / "run" / rundir.LOCK).exists()  # given back at the end


def test_reuse_needs_resume_or_overwrite(tmp_path, data_file, tiny_checkpoint):
    train(config(tmp_path, data_file, tiny_checkpoint, epochs=1))
    before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    with pytest.raises(ValueError, match="already holds a run .*--resume=true.*--overwrite=true"):
        train(config(tmp_path, data_file, tiny_checkpoint, epochs=1, lr=5e-4))
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == before  # nothing of the first run was touched
    assert not (tmp_path / "run" / rundir.LOCK).exists()  # the refused run gave its lock back
    train(config(tmp_path, data_file, tiny_checkpoint, epochs=1, overwrite=True))
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == sorted(set(steps))  # one run's lines only


@pytest.mark.parametrize("change, named", [({"batch_size": 4}, "batch_size 8 -> 4"), ({"lr": 2e-3}, "lr 0.001 -> 0.002"),
                                           ({"seed": 4}, "seed 3 -> 4"), ({"mixing": "round_robin"}, "mixing")])
def test_resume_refuses_a_changed_setting(tmp_path, data_file, tiny_checkpoint, change, named):
    train(config(tmp_path, data_file, tiny_checkpoint), stop_after=6)
    with pytest.raises(ValueError, match=f"settings differ .*{named}.*--resume_force=true"):
        train(config(tmp_path, data_file, tiny_checkpoint, resume=True, **change))
    train(config(tmp_path, data_file, tiny_checkpoint, resume=True, resume_force=True, **change))  # when insisted


def test_resuming_a_finished_run_changes_nothing(tmp_path, data_file, tiny_checkpoint, capsys):
    train(config(tmp_path, data_file, tiny_checkpoint, epochs=1))
    run = tmp_path / "run"
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    model = train(config(tmp_path, data_file, tiny_checkpoint, epochs=1, resume=True))
    assert "holds a finished run" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before, "a finished run was changed"
    assert set(model.tasks) == {"topic", "mood"}


def test_resume_never_logs_a_step_twice(tmp_path, data_file, tiny_checkpoint):
    # stop_after=7 with eval_every=5: the last checkpoint is step 5, the log already reached step 7
    train(config(tmp_path, data_file, tiny_checkpoint, log_every=1), stop_after=7)
    train(config(tmp_path, data_file, tiny_checkpoint, resume=True, log_every=1))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["split"], r.get("task"), r.get("checkpoint"), r["step"]) for r in rows]
    assert len(keys) == len(set(keys)), "a step is logged twice"


def test_out_dir_that_is_a_file(tmp_path, data_file, tiny_checkpoint):
    (tmp_path / "run").write_text("not a directory")
    with pytest.raises(ValueError, match="is a file; choose a directory"):
        train(config(tmp_path, data_file, tiny_checkpoint, epochs=1))


def test_an_empty_dev_or_test_split_is_refused_before_the_run_starts(tmp_path, data_file, tiny_checkpoint):
    small = tmp_path / "small.tsv"  # 6 rows: 80/10/10 by seed leaves the test split without a row
    small.write_text("".join(data_file.read_text().splitlines(keepends=True)[:7]))
    cfg = config(tmp_path, data_file, tiny_checkpoint, sources=[{"path": str(small), "text": "text",
                                                                 "labels": {"topic": "topic"}}])
    with pytest.raises(ValueError, match=r"the test split of .*small.tsv.* came out empty \(train 5, dev 1, test 0 "
                                         r"with split_fractions=\[0.8, 0.1, 0.1\]\): give more rows, raise its share "
                                         r".*--split_fractions=.*, give a Source with split='test'$"):
        train(cfg)
    assert not any((tmp_path / "run").glob("*/")) and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_an_empty_dev_split_runs_only_when_allowed_and_best_is_then_the_last_step(tmp_path, data_file,
                                                                                  tiny_checkpoint):
    no_dev = dict(split_fractions=[0.8, 0.0, 0.2], eval_every=2, max_steps=4, log_every=1)
    with pytest.raises(ValueError, match=r"the dev split .* came out empty .*--allow_empty_dev=true \(best/ is then "
                                         r"the last step\)"):
        train(config(tmp_path, data_file, tiny_checkpoint, **no_dev))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    train(config(tmp_path, data_file, tiny_checkpoint, allow_empty_dev=True, **no_dev))
    run = tmp_path / "run"
    best, last = (json.loads((run / d / "checkpoint.json").read_text()) for d in ("best", "last"))
    assert best["step"] == last["step"] == 4 and best["dev"] == {}
    assert (run / "best" / "model.safetensors").read_bytes() == (run / "last" / "model.safetensors").read_bytes()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"train", "test"}  # no dev line scored over no rows
    assert {json.loads(line)["split"] for line in (run / "predictions.jsonl").read_text().splitlines()} == {"test"}
