"""Nothing lost on the paths that write: every command checks its target before it starts, replaces only what it
wrote before, and cleans up what a killed run of it left; every file that shapes a result is checked on load.

Each fault case checks the files before and after, the exit code and the one-line message.
"""
import hashlib
import json
import os
import shutil

import pytest

from minimt import SentenceEncoder
from minimt.io import download, export, files
from test_faults import cli, trained  # noqa: F401  (the module-scoped trained run)


def tree(d):
    """Every file under d (hidden ones too) with its bytes: what a refused command must leave as it was."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def dead_pid():
    """A process id no process has: above the kernel's limit."""
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) + 1


# export

@pytest.fixture
def workdir(trained, tmp_path):  # noqa: F811
    """A copy of the trained run in a folder of its own, with one export of its best checkpoint beside it."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert cli("export", run / "best", tmp_path / "ex")[0] == 0
    return tmp_path, run


@pytest.mark.parametrize("target, says", [
    ("run", "contains the input"),               # export RUN/best RUN: the run itself
    ("run/best", "is also the input"),             # the checkpoint turned into an export
    ("run/best/sub", "lies inside the input"),
])
def test_export_never_writes_over_or_around_its_input(workdir, target, says):
    tmp_path, run = workdir
    before = tree(tmp_path)
    rc, msg = cli("export", run / "best", tmp_path / target, "--overwrite")  # not even with --overwrite
    assert rc == 1 and says in msg and "choose another OUT_DIR" in msg and "\n" not in msg, msg
    assert tree(tmp_path) == before


def test_export_refuses_a_folder_that_is_not_a_previous_export(workdir):
    tmp_path, run = workdir
    other = tmp_path / "notes"
    (other / "sub").mkdir(parents=True)
    (other / "a.txt").write_text("mine")
    (other / "sub" / "b.txt").write_text("mine too")
    before = tree(tmp_path)
    rc, msg = cli("export", run / "best", other)
    assert rc == 1 and f"{other} is a folder that is not a minimt export (it holds a.txt, sub)" in msg, msg
    assert "give --overwrite to replace it" in msg
    assert tree(tmp_path) == before
    assert cli("export", run / "best", other, "--overwrite")[0] == 0  # named: replaced, nothing hidden left
    assert export.is_export(other) and not (other / "a.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex", "notes", "run"]


def test_export_refuses_a_file_where_its_folder_goes(workdir):
    tmp_path, run = workdir
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    before = tree(tmp_path)
    rc, msg = cli("export", run / "best", notes)
    assert rc == 1 and f"{notes} is a file, and export writes a directory" in msg and "--overwrite" in msg, msg
    assert tree(tmp_path) == before
    assert cli("export", run / "best", notes, "--overwrite")[0] == 0
    assert notes.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["ex", "notes.txt", "run"]


def test_export_replaces_a_previous_export_but_not_what_was_added_to_it(workdir):
    tmp_path, run = workdir
    ex = tmp_path / "ex"
    assert cli("export", run / "best", ex)[0] == 0  # a previous export: replaced whole
    (ex / "README.md").write_text("my model card")
    before = tree(tmp_path)
    rc, msg = cli("export", run / "best", ex)
    assert rc == 1 and "is a previous export, but README.md in it came from elsewhere" in msg, msg
    assert tree(tmp_path) == before


def test_an_interrupted_export_is_read_and_recovered(workdir, capsys):
    tmp_path, run = workdir
    ex = tmp_path / "ex"
    old = tmp_path / f".ex.old-{dead_pid()}"
    ex.rename(old)  # killed between publish's two renames: only the previous export is left
    (tmp_path / f".ex.tmp-{dead_pid()}").mkdir()  # and a killed export's half-written folder
    rc, msg = cli("predict", ex, "a kettle that leaks")
    assert rc == 0, msg
    assert "ex is missing: an export was interrupted; using the previous export" in capsys.readouterr().err
    assert cli("export", run / "best", ex)[0] == 0
    out = capsys.readouterr().out
    assert "put back the previous export" in out and "a write of" in out and "never finished" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex", "run"]


def test_every_exported_file_is_checked(workdir):
    tmp_path, _ = workdir
    ex = tmp_path / "ex"
    cfg = json.loads((ex / "config.json").read_text())
    (ex / "config.json").write_text(json.dumps({**cfg, "num_attention_heads": 8}))  # runs, gives other numbers
    before = tree(tmp_path)
    with pytest.raises(ValueError) as e:
        SentenceEncoder.from_pretrained(ex)
    rc, msg = cli("predict", ex, "text")
    assert rc == 1 and msg == f"minimt: error: {e.value}"
    assert str(e.value).startswith(f"{ex / 'config.json'}: sha256 ") and f"recorded in {ex / 'export.json'}" in msg
    assert tree(tmp_path) == before


# evaluate

def test_evaluate_never_replaces_a_run_or_its_own_input(workdir):
    tmp_path, run = workdir
    before = tree(tmp_path)
    for out, says in [(run, "contains the input"), (run / "best", "is also the input")]:
        rc, msg = cli("evaluate", run / "best", "--out", out)
        assert rc == 1 and says in msg and "choose another --out" in msg, msg
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "summary.md").write_text("mine")
    rc, msg = cli("evaluate", run / "best", "--out", tmp_path / "reports")
    assert rc == 1 and "holds summary.md, so it is not a previous output" in msg and "--overwrite" in msg, msg
    assert tree(tmp_path) == {**before, "reports/summary.md": b"mine"}
    assert cli("evaluate", run / "best")[0] == 0  # the default: beside the checkpoint, never inside it
    assert sorted(p.name for p in (run / "best-test").iterdir()) == ["metrics.json", "predictions.jsonl"]
    assert tree(run / "best") == {k[len("run/best/"):]: v for k, v in before.items() if k.startswith("run/best/")}
    assert cli("evaluate", run / "best")[0] == 0  # its own previous output: replaced
    assert cli("evaluate", run / "best", "--out", tmp_path / "reports", "--overwrite")[0] == 0
    assert (tmp_path / "reports" / "summary.md").read_text() == "mine"


# leftovers of killed writers

def test_the_next_write_removes_a_killed_writers_temps_and_keeps_a_live_ones(tmp_path):
    out = tmp_path / "emb.npy"
    dead, live = tmp_path / f".emb.npy.tmp-{dead_pid()}-0a1b2c3d", tmp_path / ".emb.npy.tmp-1-0a1b2c3d"
    other = tmp_path / f".other.npy.tmp-{dead_pid()}-0a1b2c3d"
    for p in (dead, live, other):
        p.write_bytes(b"x" * 1000)
    texts = tmp_path / "t.txt"
    texts.write_text("one\ntwo\n")
    rc, msg = cli("embed", "--input", texts, "--output", out, "--model", download.fetch())
    assert rc == 0, msg
    assert not dead.exists() and live.exists() and other.exists()  # pid 1 runs; another target's is not ours


def test_a_killed_fetch_leaves_nothing_after_the_next(tmp_path, monkeypatch):
    from minimt.io import datasets
    mirror, home = tmp_path / "mirror", tmp_path / "data"
    f = datasets.DATASETS["stsb"].files[0]
    shutil.copytree(download.home("data") / "stsb", mirror / "stsb")  # a mirror: the same files, the same layout
    (home / "stsb").mkdir(parents=True)
    part = home / "stsb" / f".{f.name}.part-{dead_pid()}"
    part.write_bytes(b"half a file")
    monkeypatch.setenv("MINIMT_DATA", str(home))
    monkeypatch.setenv("MINIMT_DATA_MIRROR", str(mirror))
    datasets.fetch(["stsb"])
    assert (home / "stsb" / f.name).exists() and not part.exists()


def test_clear_stale_knows_only_its_own_names(tmp_path):
    target = tmp_path / "a.txt"
    keep = [tmp_path / ".a.txt.tmp-x", tmp_path / ".a.txt.bak", tmp_path / ".b.txt.tmp-5", tmp_path / "a.txt"]
    for p in keep:
        p.write_text("keep")
    gone = tmp_path / f".a.txt.tmp-{dead_pid()}-ff"
    gone.write_text("x")
    assert files.clear_stale(target) == [gone] and all(p.exists() for p in keep)
    odd = tmp_path / "b.tmp-1.txt"  # a target whose own name looks like a temp of pid 1 (always running)
    stale = tmp_path / f".b.tmp-1.txt.tmp-{dead_pid()}-ab"
    stale.write_text("x")
    assert files.clear_stale(odd) == [stale]


# weights/ and the Hugging Face cache: every file that shapes a result

@pytest.fixture
def weights_home(tmp_path, monkeypatch, minilm_dir):
    """all-MiniLM-L6-v2 in a weights home of its own (a copy), whose files are pinned in download.KNOWN."""
    monkeypatch.setenv("MINIMT_WEIGHTS", str(tmp_path / "weights"))
    d = tmp_path / "weights" / "all-MiniLM-L6-v2"
    shutil.copytree(minilm_dir, d, ignore=shutil.ignore_patterns(".*"))
    return d


@pytest.mark.parametrize("name, edit", [
    ("config.json", lambda c: c.update(num_attention_heads=8)),         # 0.5577 for the seed pair, not 0.5398
    ("tokenizer.json", lambda t: t["normalizer"].update(lowercase=False)),
    ("1_Pooling/config.json", lambda c: c.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)),
    ("sentence_bert_config.json", lambda c: c.update(max_seq_length=8)),
    ("modules.json", lambda m: m.pop()),                                 # no Normalize
])
def test_an_edited_weights_file_is_named(weights_home, name, edit):
    f = weights_home / name
    obj = json.loads(f.read_text())
    edit(obj)
    f.write_text(json.dumps(obj))
    before = tree(weights_home.parent)
    for source in ("all-MiniLM-L6-v2", weights_home):  # by name and by path
        with pytest.raises(ValueError) as e:
            SentenceEncoder.from_pretrained(source)
        assert str(e.value).startswith(f"{f}: sha256 ") and "pinned for all-MiniLM-L6-v2" in str(e.value)
        assert "\n" not in str(e.value)
    assert tree(weights_home.parent) == before


def test_a_file_first_seen_is_held_to_that(weights_home):
    SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    extra = weights_home / "special_tokens_map.json"  # not pinned: recorded when first seen
    extra.write_text('{"unk_token": "[UNK]"}')
    SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    extra.write_text('{"unk_token": "[PAD]"}')
    with pytest.raises(ValueError, match=r"special_tokens_map.json: sha256 .* recorded in .*\.verified\.json when it "
                                         r"was first loaded \(delete that record to accept a change"):
        SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
    extra.unlink()  # a file that was checked and is gone changes the model too
    with pytest.raises(FileNotFoundError, match="special_tokens_map.json is missing"):
        SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")


def test_hub_cache_files_are_held_to_their_blob_names(tmp_path, monkeypatch, tiny_checkpoint):
    """huggingface_hub names a blob after its content: an LFS file by sha256, any other by its git blob sha1."""
    monkeypatch.setenv("MINIMT_WEIGHTS", str(tmp_path / "weights"))
    repo = tmp_path / "hf" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc"
    snap.mkdir(parents=True)
    for f in sorted(tiny_checkpoint.iterdir()):
        data = f.read_bytes()
        name = (hashlib.sha256(data).hexdigest() if f.suffix == ".safetensors"
                else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())
        (repo / "blobs" / name).write_bytes(data)
        os.symlink(repo / "blobs" / name, snap / f.name)
    monkeypatch.setattr(download, "_from_hub", lambda spec: snap)
    assert download.fetch("org/tiny") == snap
    cfg = (snap / "config.json").resolve()
    cfg.write_text(cfg.read_text().replace("2", "3", 1))
    shutil.rmtree(tmp_path / "weights" / ".hub-verified")  # no record: only the blob's name can tell
    with pytest.raises(ValueError, match=r"config.json: git sha1 [0-9a-f]{40} does not match the [0-9a-f]{40} "
                                         r"huggingface_hub downloaded"):
        download.check_weights(snap, "org/tiny", tmp_path / "record.json")


# model settings a loader reads

def test_checkpoint_model_settings_are_checked(workdir):
    tmp_path, run = workdir
    meta_file = run / "best" / "checkpoint.json"
    meta = json.loads(meta_file.read_text())
    meta["model"]["num_attention_heads"] = 2
    meta_file.write_text(json.dumps(meta))
    before = tree(tmp_path)
    rc, msg = cli("predict", run / "best", "text")
    assert rc == 1 and msg.startswith(f"minimt: error: {meta_file}: the model settings ('model', 'head', 'dropout') do not match "
                                      f"the model_sha256 recorded") and "\n" not in msg, msg
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name, text, says", [
    ("1_Pooling/config.json", "[]", "holds a JSON array where a JSON object {...} belongs"),
    ("config.json", None, "config.json (with the sentence-transformers files beside it): hidden_size is \"384\", "
                          "which is not an int"),
    ("sentence_bert_config.json", "7", "holds a JSON number where a JSON object"),
    ("modules.json", '{"a": 1}', "modules.json holds a JSON dict; modules.json is a list of modules"),
])
def test_sentence_transformers_files_of_the_wrong_shape_are_named(tmp_path, minilm_dir, name, text, says):
    d = tmp_path / "st"  # a directory the user made: read as it is, so its contents decide
    shutil.copytree(minilm_dir, d, ignore=shutil.ignore_patterns(".*"))
    if text is None:
        cfg = json.loads((d / name).read_text())
        text = json.dumps({**cfg, "hidden_size": "384"})
    (d / name).write_text(text)
    rc, msg = cli("similarity", "a", "b", "--model", d)
    assert rc == 1 and says in msg and "\n" not in msg, msg
