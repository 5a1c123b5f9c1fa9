"""minimt.datasets: the real download code (urllib) against a local HTTP server serving made-up files; no internet.

Each test swaps the registry for a made-up dataset "toy" whose sha256 it computes, and points the public source
(datasets.RAW) or MINIMT_DATA_MIRROR at the local server or a temporary folder.
"""
import functools
import hashlib
import http.server
import io
import os
import re
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from minimt.errors import UserError
from minimt.io import datasets
from minimt.io.datasets import DATASETS, Dataset, File
from minimt.io.download import sha256_of

ROOT = Path(__file__).resolve().parents[1]
GOOD = b"one line\nanother line\n"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def sha(data):
    return hashlib.sha256(data).hexdigest()


def toy_file(name="a.txt", data=GOOD, path="orig/a b.txt", **kw):
    """A File of the made-up dataset: its public copy sits at owner/repo/<COMMIT>/<path>."""
    return File(name, "owner/repo", COMMIT, path, sha(data), len(data), **kw)


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path.lstrip("/"))  # lets a test see what was downloaded
        super().do_GET()

    def log_message(self, *args):  # no request lines in the test output
        pass


@pytest.fixture
def www(tmp_path):
    """(folder, its URL): a ThreadingHTTPServer on 127.0.0.1, a free port, serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", httpd.requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The data directory of these tests (MINIMT_DATA), empty, with no mirror set."""
    monkeypatch.setenv("MINIMT_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("MINIMT_DATA_MIRROR", raising=False)
    return tmp_path / "data"


def register(monkeypatch, *files):
    monkeypatch.setattr(datasets, "DATASETS", {"toy": Dataset(files, licence="none", used_by="tests")})


def put(root, rel, data):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)


def fetch_logged():
    lines = []
    return datasets.fetch(log=lines.append), "\n".join(lines)


def test_http_mirror_delivers_the_file_then_a_second_fetch_downloads_nothing(www, home, monkeypatch):
    root, url, requests = www
    register(monkeypatch, toy_file())
    put(root, "mirror/toy/a.txt", GOOD)
    monkeypatch.setenv("MINIMT_DATA_MIRROR", f"{url}/mirror")
    out, log = fetch_logged()
    assert out == home and (home / "toy" / "a.txt").read_bytes() == GOOD
    assert f"from the mirror {url}/mirror (MINIMT_DATA_MIRROR)" in log
    assert f"toy/a.txt  {len(GOOD)} bytes, sha256 ok" in log
    assert requests == ["mirror/toy/a.txt"]
    _, log = fetch_logged()
    assert requests == ["mirror/toy/a.txt"], "the second fetch downloaded again"
    assert "toy: 1 of 1 files already there, sha256 ok" in log
    assert sorted(p.name for p in (home / "toy").iterdir()) == ["a.txt"]  # no temporary file left


def test_sha256_mismatch_names_file_hashes_and_source_and_keeps_nothing(www, home, monkeypatch):
    root, url, _ = www
    bad = b"other bytes\n"
    register(monkeypatch, toy_file())
    put(root, "toy/a.txt", bad)
    monkeypatch.setenv("MINIMT_DATA_MIRROR", url)
    with pytest.raises(UserError) as e:
        datasets.fetch()
    msg = str(e.value)
    assert f"toy/a.txt from {url}/toy/a.txt has {len(bad)} bytes, sha256 {sha(bad)}" in msg
    assert f"expected {len(GOOD)} bytes, sha256 {sha(GOOD)}" in msg and "nothing was kept" in msg
    assert list((home / "toy").iterdir()) == []  # neither a.txt nor .a.txt.part-<pid>


def test_404_names_the_url_and_the_mirror_variable(www, home, monkeypatch):
    _, url, _ = www
    register(monkeypatch, toy_file())
    monkeypatch.setenv("MINIMT_DATA_MIRROR", url)
    with pytest.raises(UserError, match=rf"could not download toy/a.txt from {re.escape(url)}/toy/a.txt "
                                           r"\(HTTP Error 404: .*\): set MINIMT_DATA_MIRROR to a directory or "
                                           r"http\(s\) URL holding toy/a.txt"):
        datasets.fetch()
    assert list((home / "toy").iterdir()) == []


def test_directory_mirror(tmp_path, home, monkeypatch):
    register(monkeypatch, toy_file())
    monkeypatch.setenv("MINIMT_DATA_MIRROR", str(tmp_path / "mirror"))
    (tmp_path / "mirror").mkdir()
    missing = re.escape(str(tmp_path / "mirror" / "toy" / "a.txt"))
    with pytest.raises(UserError, match=rf"could not copy toy/a.txt: {missing} does not exist: set MINIMT_DATA_MIRROR"):
        datasets.fetch()
    put(tmp_path, "mirror/toy/a.txt", GOOD)
    datasets.fetch(log=lambda msg: None)
    assert (home / "toy" / "a.txt").read_bytes() == GOOD


def test_a_mirror_that_is_neither_folder_nor_url(tmp_path, home, monkeypatch):
    register(monkeypatch, toy_file())
    monkeypatch.setenv("MINIMT_DATA_MIRROR", str(tmp_path / "no-such-folder"))
    with pytest.raises(ValueError, match="no-such-folder is neither a directory nor an http"):
        datasets.fetch()


def test_no_source_answering_is_one_clear_error(home, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on: bound, then closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(datasets, "RAW", f"http://127.0.0.1:{port}")
    register(monkeypatch, toy_file())
    url = f"http://127.0.0.1:{port}/owner/repo/{COMMIT}/orig/a%20b.txt"  # the original path, URL-quoted
    with pytest.raises(UserError, match=rf"could not download toy/a.txt from {re.escape(url)} \(.+\): set "
                                           r"MINIMT_DATA_MIRROR to a directory or http\(s\) URL holding toy/a.txt, "
                                           r"or connect to the internet$"):
        datasets.fetch()


def test_public_source_with_both_transforms(www, home, monkeypatch):
    """Public copies that are not the final bytes: Latin-1 text (re-encoded to UTF-8) and a zip (one member)."""
    root, url, _ = www
    monkeypatch.setattr(datasets, "RAW", url)
    latin1, utf8 = "a sister\xf0city ?\n".encode("latin-1"), "a sister\xf0city ?\n".encode("utf-8")
    csv = b"id,text\n1,\"a, b\"\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("__MACOSX/._Reviews.csv", b"resource fork")
        z.writestr("Reviews.csv", csv)
    register(monkeypatch, toy_file("q.label", utf8, "data/q.label", encoding="latin-1", public_sha256=sha(latin1)),
             toy_file("reviews.csv", csv, "Reviews.csv.zip", member="Reviews.csv"))
    put(root, f"owner/repo/{COMMIT}/data/q.label", latin1)
    put(root, f"owner/repo/{COMMIT}/Reviews.csv.zip", buf.getvalue())
    _, log = fetch_logged()
    assert "from public GitHub repositories at pinned commits" in log
    assert f"toy/q.label  {len(utf8)} bytes, sha256 ok (converted from latin-1 to UTF-8)" in log
    assert f"toy/reviews.csv  {len(csv)} bytes, sha256 ok (taken out of Reviews.csv.zip)" in log
    assert (home / "toy" / "q.label").read_bytes() == utf8 and (home / "toy" / "reviews.csv").read_bytes() == csv
    assert sorted(p.name for p in (home / "toy").iterdir()) == ["q.label", "reviews.csv"]


def test_public_copy_is_checked_before_its_transform(www, home, monkeypatch):
    root, url, _ = www
    monkeypatch.setattr(datasets, "RAW", url)
    public, other = b"\xf0\n", b"\xf1\n"
    register(monkeypatch, toy_file("q.label", public.decode("latin-1").encode(), "q.label", encoding="latin-1",
                                   public_sha256=sha(public)))
    put(root, f"owner/repo/{COMMIT}/q.label", other)
    with pytest.raises(UserError, match=rf"toy/q.label: the public copy from {re.escape(url)}/owner/repo/"
                                           rf"{COMMIT}/q.label has 2 bytes, sha256 {sha(other)}; expected sha256 "
                                           rf"{sha(public)}"):
        datasets.fetch()
    assert list((home / "toy").iterdir()) == []  # neither the public copy nor the converted one


def test_a_mirror_holds_final_bytes_and_gets_no_transform(tmp_path, home, monkeypatch):
    utf8 = "\xf0\n".encode("utf-8")
    register(monkeypatch, toy_file("q.label", utf8, "q.label", encoding="latin-1", public_sha256=sha(b"\xf0\n")))
    put(tmp_path, "mirror/toy/q.label", utf8)
    monkeypatch.setenv("MINIMT_DATA_MIRROR", str(tmp_path / "mirror"))
    datasets.fetch(log=lambda msg: None)  # converting again would turn ð into Ã° and fail the sha256
    assert (home / "toy" / "q.label").read_bytes() == utf8


def test_a_damaged_file_is_fetched_again(tmp_path, home, monkeypatch):
    register(monkeypatch, toy_file())
    put(tmp_path, "mirror/toy/a.txt", GOOD)
    put(home, "toy/a.txt", b"half a fi")
    monkeypatch.setenv("MINIMT_DATA_MIRROR", str(tmp_path / "mirror"))
    _, log = fetch_logged()
    assert "toy/a.txt has the wrong sha256; fetching it again" in log
    assert (home / "toy" / "a.txt").read_bytes() == GOOD


def test_ctrl_c_leaves_no_temporary_file(tmp_path, home, monkeypatch):
    register(monkeypatch, toy_file())
    put(tmp_path, "mirror/toy/a.txt", GOOD)
    monkeypatch.setenv("MINIMT_DATA_MIRROR", str(tmp_path / "mirror"))

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(datasets, "_check", interrupted)  # after the download, before the rename
    with pytest.raises(KeyboardInterrupt):
        datasets.fetch(log=lambda msg: None)
    assert list((home / "toy").iterdir()) == []


def test_path_says_how_to_fetch_a_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMT_DATA", str(tmp_path))  # the data directory is decided when asked, not at import
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(tmp_path / 'stsb' / 'sts-dev.csv'))} is missing; "
                                                r"fetch it with `make data` or `python -m minimt data stsb`"):
        datasets.path("stsb", "sts-dev.csv")
    put(tmp_path, "stsb/sts-dev.csv", b"x")
    assert datasets.path("stsb", "sts-dev.csv") == tmp_path / "stsb" / "sts-dev.csv"


def test_unknown_names_list_the_known_ones(home):
    with pytest.raises(ValueError, match="unknown dataset 'bogus'; the known ones are stsb, multi_domain_sentiment"):
        datasets.fetch(["stsb", "bogus"])
    r = subprocess.run([sys.executable, "-m", "minimt", "data", "bogus"], capture_output=True, text=True)
    assert r.returncode != 0
    known = ", ".join(DATASETS)
    assert r.stderr.strip().splitlines()[-1] == f"minimt: error: unknown dataset 'bogus'; the known ones are {known}"


def test_the_registry_matches_the_data():
    """With a mirror folder (CI sets one), every registered file is there with its size and sha256, and every data
    file there is registered. Always: well-formed entries, and every dataset folder this repository reads is known."""
    for name, ds in DATASETS.items():
        for f in ds.files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256) and re.fullmatch(r"[0-9a-f]{40}", f.commit), (name, f)
            assert f.url.startswith(f"https://raw.githubusercontent.com/{f.repo}/{f.commit}/") and " " not in f.url
            assert f.size > 0 and (f.member or f.encoding or not f.public_sha256), (name, f)  # public != final
    used = set()
    code = [*ROOT.glob("examples/*.py"), *ROOT.glob("examples/*.json"), *ROOT.glob("tests/*.py"),
            *ROOT.glob("tests/bench/*.py"), *ROOT.glob("minimt/*.py")]
    for p in code:
        if p.name != "test_datasets.py":  # this file names made-up datasets
            text = p.read_text(encoding="utf-8")
            used |= set(re.findall(r"""["'](\w+)/[\w*.-]+\.(?:tsv|csv|label|txt|jsonl)["']""", text))
            used |= set(re.findall(r"""datasets\.path\(\s*["'](\w+)["']""", text))
    assert {"stsb", "multi_domain_sentiment"} <= used, "the scan for dataset folders found too little"
    assert used - {"nope"} <= set(DATASETS), f"read but not registered: {sorted(used - {'nope'} - set(DATASETS))}"

    mirror = os.environ.get("MINIMT_DATA_MIRROR", "")
    if mirror and Path(mirror).is_dir():
        registered = {(name, f.name) for name, ds in DATASETS.items() for f in ds.files}
        there = {(d.name, p.name) for d in Path(mirror).iterdir() if d.is_dir() for p in d.iterdir()
                 if p.suffix != ".md"}  # notes beside the data (a PROVENANCE.md) are not data files
        assert there == registered, f"only in the mirror: {there - registered}; only registered: {registered - there}"
        for name, ds in DATASETS.items():
            for f in ds.files:
                p = Path(mirror) / name / f.name
                assert (p.stat().st_size, sha256_of(p)) == (f.size, f.sha256), f"{p} differs from the registry"


def test_the_readme_table_matches_the_registry():
    text = (ROOT / "docs" / "data.md").read_text(encoding="utf-8")
    for name, ds in DATASETS.items():
        row = re.search(rf"^\| {name} \| (.*)$", text, re.M)
        assert row, f"docs/data.md has no row for {name}"
        for f in ds.files:
            assert f"{f.repo}@{f.commit[:7]}" in row.group(1), f"docs/data.md row {name}: no {f.repo}@{f.commit[:7]}"
        size = f"{sum(f.size for f in ds.files) / 1e6:.1f} MB, {len(ds.files)} file"
        assert size in row.group(1) and ds.licence in row.group(1), \
            f"docs/data.md row {name}: expected {size}, {ds.licence}"
