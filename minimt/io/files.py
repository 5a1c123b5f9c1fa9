"""Output files that appear whole or not at all: write a temporary file beside the target, fsync it, rename it.

    .corpus.npy.tmp-<pid>-<random>   written (and its disk space reserved) first, in the target's directory
    corpus.npy                       then os.replace(temp, target): one rename on one file system is atomic

A reader of the target, or a run killed at any instant (kill -9, a full disk), finds the previous file or the new
one, never a part of either; a failure leaves no new file behind (a kill -9 can leave the hidden temp, which is
safe to delete, and the next write to the same target deletes it: clear_stale). The space is reserved up front
with posix_fallocate, so a full disk fails with a message before
any work is written, rather than as SIGBUS when a memory-mapped page (corpus.py) finds no free block later.
Directories (checkpoints, exports) go the same way: filled in a fresh hidden directory (fresh_dir), then
publish() renames it into place. This file is the one home of these helpers: atomic publish, JSON, sha256.
"""
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
from pathlib import Path

import numpy as np

from minimt.errors import UserError


def write_all(contents, option="--output"):
    """Write {path: str or bytes} so that each path holds its old content or its new one, never a part: every
    temp is written first, then they are renamed in turn (a kill between two renames leaves the first one new).
    `option` names what chose the paths in the error messages ("choose another --output")."""
    temps = {}
    try:
        for path, data in contents.items():
            temps[path] = write_temp(path, data.encode("utf-8") if isinstance(data, str) else data, option)
        for path, tmp in temps.items():
            publish(tmp, path)
    finally:
        for tmp in temps.values():
            discard(tmp)  # after a failure; a published temp is gone already


def write_text(path, text, option="--output"):
    write_all({path: text}, option)


def save_npy(path, array, option="--output"):
    """np.save, atomically: exactly `path`, no .npy added to the name."""
    buf = io.BytesIO()
    np.save(buf, array)
    write_all({path: buf.getvalue()}, option)


def create_npy(path, shape, dtype=np.float32, option="--output"):
    """A temp for the .npy `path`: the header, then room for an array of `shape`, zeros until written (open it with
    np.lib.format.open_memmap(temp, mode="r+")). Returns the temp's path, to publish() or discard()."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": tuple(shape)})
    header = buf.getvalue()
    return write_temp(path, header, option, size=len(header) + int(np.prod(shape)) * np.dtype(dtype).itemsize)


def write_temp(path, data, option="--output", size=None):
    """A new temp beside `path` holding the bytes `data`, `size` bytes long (default: len(data)) and all of them
    reserved on disk. Nothing is left behind if this fails."""
    size = len(data) if size is None else size
    tmp = new_temp(path, option)
    try:
        with open(tmp, "r+b") as f:
            reserve(f.fileno(), size)
            f.write(data)
    except OSError as e:
        discard(tmp)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(f"no space left on {path} (needs {size:,} bytes): free space or choose another "
                          f"{option}") from e
        if e.errno == errno.EFBIG:
            raise OSError(f"{path} would pass the file size limit (needs {size:,} bytes; see ulimit -f): raise the "
                          f"limit or choose another {option}") from e
        raise
    return tmp


def new_temp(path, option="--output"):
    """Create an empty, hidden temp file beside `path` (same file system, so the final rename is atomic). pid and
    a random part keep concurrent runs apart, and O_EXCL makes a clash an error, not a shared file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a file: choose another {option}")
    if path.exists() and not path.is_file():  # a rename would replace the device or pipe itself (/dev/full)
        raise UserError(f"{path} is not a regular file (a device, pipe or socket); minimt writes a file whole and "
                        f"renames it into place: choose another {option}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {path.parent} does not exist: create it or choose another {option}")
    clear_stale(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # 0o666 & umask, as open() would
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermissionError(f"cannot create files in {path.parent} ({e.strerror}): make it writable or "
                                  f"choose another {option}") from e
        raise
    return tmp


# what a writer leaves beside its target `name` while it works: .name.tmp-<pid>-<random> (a file, new_temp),
# .name.tmp-<pid> and .name.old-<pid> (a directory, fresh_dir and publish), .name.part-<pid> and .name.public-<pid>
# (a download, datasets.py and download.py)
def leftovers(path, kind):
    """The .<name>.<kind>-<pid>[-<random>] files and directories beside `path` (kind: tmp, old, part, public)."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{kind}-(\d+)(-[0-9a-f]+)?")
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))


def writer_pid(leftover):
    # the last match: the target's own name may hold ".tmp-5" too
    return int(re.findall(r"\.(?:tmp|old|part|public)-(\d+)", Path(leftover).name)[-1])


def alive(pid):
    """Is process `pid` running on this machine? (A temp of a live writer is its work in progress.)"""
    if pid == os.getpid():
        return False  # our own leftovers are from a call that failed or was interrupted, never in progress
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def clear_stale(path, kinds=("tmp", "part")):
    """Delete what killed writers left beside `path`: the temps of `kinds` whose process is gone. A live writer's
    temp is left alone, so two commands writing the same target never delete each other's work."""
    removed = []
    for p in [p for kind in kinds for p in leftovers(path, kind)]:
        if alive(writer_pid(p)):
            continue
        remove(p)
        removed.append(p)
    return removed


def check_not_input(target, inputs, option="--output", folders=False):
    """Refuse a target that is one of the command's input files; with `folders` (the inputs may be directories, the
    target is one), also a target that contains an input or lies inside one: writing it would destroy what is
    being read."""
    t = Path(target).resolve()
    for src in inputs:
        s = Path(src).resolve()
        if t == s or folders and (t in s.parents or s in t.parents):
            relation = "is also" if t == s else "contains" if t in s.parents else "lies inside"
            raise UserError(f"{target} {relation} the input {src}: writing it would replace what is read; choose "
                            f"another {option}")


def check_out_dir(out, ours, option="--out", flag="--overwrite", overwrite=False):
    """Refuse a folder `out` to write the files `ours` into when it is a file, or holds anything else (it is not
    a previous output of the same command), unless `overwrite`: a command replaces only what it wrote."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, and {option} names a folder: choose another {option}")
    others = sorted(p.name for p in out.iterdir() if p.name not in ours) if out.is_dir() else []
    if others and not overwrite:
        raise UserError(f"{out} holds {some(others)}, so it is not a previous output of this command "
                        f"(which writes {', '.join(ours)}): choose another {option}, or give {flag} to write beside "
                        f"them")


def some(names, n=3):
    """The first `n` names and how many more: "a.txt, b.txt, c.txt and 4 more", for one-line messages."""
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def check_target(path, option="--output"):
    """Fail now, before any work, if `path` cannot be written the way write_all writes it (a directory, a missing
    folder, no permission): a temp is made beside it and removed."""
    discard(new_temp(path, option))


def reserve(fd, size):
    """Give the open file `size` bytes on disk now, so that a full disk (or a file size limit) fails here with a
    message, rather than as SIGBUS when a memory-mapped page finds no free block. posix_fallocate is Linux/BSD
    (glibc emulates it on file systems without fallocate); where it is missing the file only grows (sparse), and a
    full disk shows only when a page is written."""
    if size == 0:
        return
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as e:
            if e.errno != errno.EOPNOTSUPP:  # e.g. musl on a file system without fallocate: grow it sparse below
                raise
    os.ftruncate(fd, size)


def publish(tmp, path):
    """Put the finished temp file or directory `tmp` at `path`, replacing what was there: a reader sees the old one
    or the new one, never a mix. The bytes reach the disk before the name points at them."""
    tmp, path = Path(tmp), Path(path)
    for f in [tmp] if tmp.is_file() else [f for f in tmp.rglob("*") if f.is_file()]:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if tmp.is_file():
        os.replace(tmp, path)
    else:  # two renames: a directory cannot replace a non-empty one in one step (a kill between them: recover())
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists() or path.is_symlink():
            remove(old)  # left by a killed process that had our pid: `path` is newer
            os.rename(path, old)
        os.rename(tmp, path)
        remove(old)
    if os.name == "posix":  # the directory entry too; Windows cannot open a directory
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def fresh_dir(path):
    """An empty hidden directory beside `path` (.<name>.tmp-<pid>), to fill and then publish()."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_stale(path)  # our own earlier attempt, and the temps of writers that were killed
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    return tmp


def newest_intact(olds, rank):
    """(the directory among `olds` that passes rank() with the highest rank, or None; that rank; {directory: why it
    was passed over}). rank(d) raises ValueError, FileNotFoundError or KeyError for a damaged directory."""
    ranks, rejected = {}, {}
    for d in olds:
        try:
            ranks[d] = rank(d)
        except (ValueError, FileNotFoundError, KeyError) as e:  # KeyError: a record without a field it must have
            rejected[d] = f"{type(e).__name__}: {e}"
    if not ranks:
        return None, None, rejected
    best = max(ranks, key=lambda d: (ranks[d], d.name))
    return best, ranks[best], rejected


def recover(path, rank, what, rank_name=None):
    """Clean up after killed writes of the directory `path` (a checkpoint or an export, `what`); returns one message
    per action, to log. Call it before writing `path` again. `rank_name` ("step") puts the rank in the message.
      .<name>.tmp-<pid>   a write that never finished: removed once its process is gone
      .<name>.old-<pid>   the previous directory, kept by publish() until the new one is in place: removed if `path`
                          exists; otherwise the intact one with the highest rank() (a checkpoint's step) goes back
                          to `path`, the rest are removed (if none is intact, all are kept, for a person to look at)"""
    path = Path(path)
    done = [f"removed {tmp}: a write of {path} that never finished" for tmp in clear_stale(path, ("tmp",))]
    olds = [d for d in leftovers(path, "old") if d.is_dir()]
    if olds and not path.exists():
        best, r, rejected = newest_intact(olds, rank)
        if best is None:
            return done + [f"{path} is missing and no copy left by an interrupted write is intact; kept them for "
                           f"you to inspect or delete: " + "; ".join(f"{d}: {why}" for d, why in rejected.items())]
        os.rename(best, path)
        olds.remove(best)
        done.append(f"{path} was missing (a write was interrupted): put back the previous {what} {best.name}"
                    + (f" ({rank_name} {r})" if rank_name else ""))
    for old in olds:
        remove(old)
        done.append(f"removed {old}: a previous {what} of {path} left by an interrupted write")
    return done


def write_json(path, obj):
    """A JSON file inside a fresh_dir (published with it, so it needs no rename of its own)."""
    Path(path).write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def check_sha256(f, want, record, fix):
    """`f`, after checking that it is there and, if `want` is not None, that its sha256 is `want` (from `record`)."""
    f = Path(f)
    if not f.exists():
        raise FileNotFoundError(f"{f} is missing; {fix}")
    if want is not None and (got := sha256_of(f)) != want:
        raise UserError(f"{f}: sha256 {got} does not match the {want} recorded in {record}: the file was changed "
                        f"or damaged; {fix}")
    return f


def remove(p):
    """Delete the file, link or directory tree `p`, if it is there."""
    p = Path(p)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)


def discard(tmp):
    Path(tmp).unlink(missing_ok=True)

