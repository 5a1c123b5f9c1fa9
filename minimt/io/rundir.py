"""One run per directory: a training run owns its out_dir, and a resumed run is the same run.

    with claim(cfg, log):   the whole run: out_dir's lock taken, two runs never mixed, a resume checked exact;
        ...                 the lock is given back at the end, after an error too

Without this, two trainings pointed at one out_dir both "succeed": best/ comes from one, last/ from the other and
metrics.jsonl interleaves them. The lock is a file created with O_EXCL (atomic on every local file system), holding
the owner's pid, host and start time, so the error can say who holds it. A lock whose process is gone (kill -9,
a crash) is stale: the next run takes it over and says so.
"""
import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from minimt.errors import UserError
from minimt.io import checkpoint, files

LOCK = "run.lock"
RUN_FILES = ("best", "last", "metrics.jsonl", "predictions.jsonl", "curves.png")  # what a run writes into out_dir


@contextmanager
def claim(cfg, log=print, enabled=True):
    """Make cfg.out_dir this run's: lock it, then refuse a directory that holds another run (unless resume or
    overwrite), or a resume whose settings differ from the saved run's (unless resume_force). enabled=False: a
    process that writes nothing there (the other ranks of a torchrun job)."""
    if not enabled:
        yield
        return
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"out_dir {out} is a file; choose a directory for the run (--out_dir=...)")
    out.mkdir(parents=True, exist_ok=True)
    take_lock(out / LOCK, log)
    try:
        for name in ("last", "best"):  # a killed run's half-written or set-aside checkpoints (safe: we hold the lock)
            for message in checkpoint.recover(out / name):
                log(message)
        present = [name for name in RUN_FILES if (out / name).exists()]
        if cfg.overwrite:
            for name in present:
                path = out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            if present:
                log(f"overwrite: removed {', '.join(present)} from {out}")
        elif cfg.resume:
            check_resume(cfg, out)
        elif present:
            raise UserError(f"out_dir {out} already holds a run ({', '.join(present)}); continue it with "
                            f"--resume=true, start it over with --overwrite=true, or choose another --out_dir")
        yield
    finally:
        release(cfg)


def take_lock(path, log):
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):  # the second try follows the removal of a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(path)
            if holder is None or not alive(holder):
                log(f"{path}: taking over a stale lock ({describe(holder)}, no longer running)")
                path.unlink(missing_ok=True)
                continue
            raise UserError(f"{path.parent} is in use by another training run ({describe(holder)}); wait for it, "
                            f"or choose another --out_dir") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return
    raise UserError(f"{path}: could not take the lock (another run keeps creating it); choose another --out_dir")


def read_lock(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # half-written by a run killed between create and write: nobody holds it


def alive(holder):
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process cannot be checked from here: assume it runs
    try:
        os.kill(holder["pid"], 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def describe(holder):
    if holder is None:
        return "an unreadable lock file"
    return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"


def release(cfg):
    path = Path(cfg.out_dir) / LOCK
    holder = read_lock(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def check_resume(cfg, out):
    """A resumed run must be the run it continues: the same data, schedule and seed, or it is not exact."""
    meta_path = out / "last" / "checkpoint.json"
    if not meta_path.exists():
        return  # the checkpoint code names what is missing (or recovers an interrupted save)
    try:
        saved = json.loads(meta_path.read_text(encoding="utf-8"))["train"]
    except (ValueError, KeyError):
        raise UserError(f"{meta_path} is damaged (not the JSON a checkpoint writes); start over with "
                        f"--overwrite=true") from None
    exact = [f.name for f in fields(cfg) if f.name not in cfg.SAFE_TO_CHANGE]  # the settings that shape the weights
    changed = [f"{k} {saved[k]!r} -> {getattr(cfg, k)!r}" for k in exact if k in saved and saved[k] != getattr(cfg, k)]
    if changed and not cfg.resume_force:
        raise UserError(f"--resume: settings differ from the run saved in {out / 'last'}: {'; '.join(changed)}. "
                        f"Resume with the original values, or add --resume_force=true to continue anyway "
                        f"(no longer exact)")


def trim_metrics(path, step):
    """After a resume from `step`, drop the lines the interrupted run wrote past it: they are written again, and
    metrics.jsonl must never hold one step twice. Rewritten whole or not at all (minimt/io/files.py)."""
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    files.write_text(path, "".join(keep), "out_dir")
    return len(lines) - len(keep)
