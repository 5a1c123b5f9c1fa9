"""Nothing lost, nothing silent: every damaged, edited or non-finite file is a ValueError naming it, and the files
beside it are left exactly as they were.

    checkpoints      checkpoint.json records the sha256 of model.safetensors, train_state.pt and the label lists
    exports          heads.json records the same for heads.safetensors, model.safetensors and the label lists
    weights/<name>   .verified.json notes the last check, so an unchanged model.safetensors is not hashed again
    leftovers        checkpoint.recover() clears what a killed save leaves, putting back the newest intact copy
"""
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from minimt import MultiTaskModel, SentenceEncoder
from minimt.io import checkpoint, download
from minimt.io.download import Pretrained
from minimt.io.files import sha256_of
from minimt.weights import check_finite

TASKS = {"topic": ["sport", "food", "tech"], "mood": ["negative", "positive"]}


@pytest.fixture
def model(tiny_encoder):
    return MultiTaskModel(tiny_encoder, TASKS)


def save(model, path, step=7):
    """A "last" checkpoint: model.safetensors, checkpoint.json, tokenizer.json and train_state.pt."""
    return checkpoint.save(path, model, {"step": step}, {"step": step, "rng": torch.get_rng_state()})


def files(d):
    """Every file under `d` with its bytes: to show that a failed load changed nothing."""
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def edit_json(f, edit):
    meta = json.loads(f.read_text())
    edit(meta)
    f.write_text(json.dumps(meta))


# ways to damage a file: each keeps the file in place, as a disk error, a cut-off copy or an editor would
def tamper(f):  # one byte of the data changed, the size kept
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x55
    f.write_bytes(bytes(data))


def truncate(f):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def garble(f):  # the same size, nothing readable in it
    f.write_bytes(bytes(range(256)) * (f.stat().st_size // 256) + b"\0" * (f.stat().st_size % 256))


SHA = r"sha256 [0-9a-f]{64} does not match the [0-9a-f]{64} recorded in .*checkpoint.json: the file was changed"


@pytest.mark.parametrize("name, damage, message", [
    ("model.safetensors", tamper, SHA),
    ("model.safetensors", truncate, SHA),
    ("model.safetensors", garble, SHA),
    ("tokenizer.json", tamper, SHA),
    ("train_state.pt", tamper, SHA),
    ("train_state.pt", truncate, SHA),
    ("checkpoint.json", truncate, r"is not valid JSON .*: it was cut off or damaged; restore"),
], ids=lambda x: getattr(x, "__name__", None))
def test_damaged_checkpoint_file_is_named(tmp_path, model, name, damage, message):
    d = save(model, tmp_path / "last")
    damage(d / name)
    before = files(tmp_path)
    load = checkpoint.load_train_state if name == "train_state.pt" else MultiTaskModel.from_checkpoint
    with pytest.raises(ValueError, match=message) as e:
        load(d)
    assert str(d / name) in str(e.value) and "\n" not in str(e.value)
    assert files(tmp_path) == before


@pytest.mark.parametrize("load", [checkpoint.read, checkpoint.load_tensors, MultiTaskModel.from_checkpoint,
                                  SentenceEncoder.from_pretrained],
                         ids=lambda f: f.__qualname__)
def test_every_loader_checks(tmp_path, model, load):
    d = save(model, tmp_path / "best")
    tamper(d / "model.safetensors")
    with pytest.raises(ValueError, match=SHA):
        load(d)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["topic"].reverse(),  # the same labels, other class indices: only the hash can tell
     r"checkpoint.json: the label lists under 'tasks' do not match the labels_sha256 recorded"),
    (lambda t: t["topic"].__setitem__(0, "sports"), r"do not match the labels_sha256"),
    (lambda t: t["topic"].pop(),  # the count is checked before the hash: the message says what changed
     r"checkpoint.json: head 'topic' has 3 outputs in model.safetensors but 2 labels"),
    (lambda t: t["mood"].append("neutral"), r"head 'mood' has 2 outputs in model.safetensors but 3 labels"),
    (lambda t: t.pop("mood"), r"model.safetensors: head 'mood' has no label list under 'tasks' in .*checkpoint"),
    (lambda t: t.update(extra=["x", "y"]), r"checkpoint.json: task 'extra' has no head in .*model.safetensors"),
], ids=["reversed", "renamed", "one-label-fewer", "one-label-more", "head-without-labels", "labels-without-head"])
def test_edited_label_lists_are_refused(tmp_path, model, edit, message):
    d = save(model, tmp_path / "best")
    edit_json(d / "checkpoint.json", lambda meta: edit(meta["tasks"]))
    before = files(tmp_path)
    with pytest.raises(ValueError, match=message) as e:
        MultiTaskModel.from_checkpoint(d)
    assert str(d) in str(e.value)
    assert files(tmp_path) == before


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json"])
def test_a_checkpoint_that_records_no_hash_is_refused(tmp_path, model, name):
    d = save(model, tmp_path / "best")
    edit_json(d / "checkpoint.json", lambda meta: meta["sha256"].pop(name))
    with pytest.raises(ValueError, match=f"checkpoint.json records no sha256 for {name}; restore"):
        MultiTaskModel.from_checkpoint(d)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_checkpoint_weight_is_named(tmp_path, model, value):
    with torch.no_grad():
        model.bert.layers[1].ffn.up.weight[3, 4] = value  # a run that diverged, saved as it was
    d = save(model, tmp_path / "last")
    before = files(tmp_path)
    n = model.bert.layers[1].ffn.up.weight.numel()
    for load in (MultiTaskModel.from_checkpoint, checkpoint.load_tensors):
        with pytest.raises(ValueError) as e:
            load(d)
        assert str(e.value) == (f"{d / 'model.safetensors'}: tensor 'bert.layers.1.ffn.up.weight' holds 1 NaN/inf "
                                f"value(s) of {n}; restore the checkpoint from a copy or train it again")
    assert files(tmp_path) == before


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_pretrained_weight_is_named(tmp_path, tiny_checkpoint, value):
    d = tmp_path / "tiny"
    shutil.copytree(tiny_checkpoint, d)
    state = load_file(d / "model.safetensors")
    state["encoder.layer.1.output.dense.weight"][0, 0] = value
    save_file(state, d / "model.safetensors")
    before = files(tmp_path)
    with pytest.raises(ValueError) as e:
        SentenceEncoder.from_pretrained(d)
    assert str(e.value).startswith(f"{d / 'model.safetensors'}: tensor 'encoder.layer.1.output.dense.weight' holds 1 "
                                   f"NaN/inf value(s)") and "fetch it again" in str(e.value)
    assert files(tmp_path) == before


def test_finite_check_is_exact():
    """The cheap sum can overflow on finite values (float16 tops out at 65504): those must still load."""
    big = torch.full((10,), 60000.0, dtype=torch.float16)
    assert not torch.isfinite(big.sum())
    check_finite("x.safetensors", "big", big, "fix")
    big[7] = float("nan")
    with pytest.raises(ValueError, match="x.safetensors: tensor 'big' holds 1 NaN/inf value"):
        check_finite("x.safetensors", "big", big, "fix")


EXPORT_SHA = r"sha256 .* does not match .* recorded in .*export.json: the file was changed"


@pytest.mark.parametrize("edit, message", [
    (lambda d: edit_json(d / "heads.json", lambda m: m["tasks"]["topic"].reverse()), "heads.json: " + EXPORT_SHA),
    (lambda d: truncate(d / "heads.json"), "heads.json: " + EXPORT_SHA),
    (lambda d: tamper(d / "heads.safetensors"), "heads.safetensors: " + EXPORT_SHA),
    (lambda d: tamper(d / "model.safetensors"), "model.safetensors: " + EXPORT_SHA),
    (lambda d: edit_json(d / "config.json", lambda m: m.update(num_attention_heads=8)), "config.json: " + EXPORT_SHA),
    (lambda d: edit_json(d / "1_Pooling" / "config.json", lambda m: m.update(pooling_mode_mean_tokens=False,
                                                                             pooling_mode_cls_token=True)),
     "1_Pooling/config.json: " + EXPORT_SHA),
    (lambda d: edit_json(d / "export.json", lambda m: m["sha256"].pop("heads.safetensors")),
     r"export.json records no sha256 for heads.safetensors"),
    (lambda d: truncate(d / "export.json"), r"export.json is not valid JSON"),
], ids=["reversed-labels", "truncated-heads.json", "tampered-heads", "tampered-encoder", "config.json-8-heads",
        "pooling-cls", "no-recorded-hash", "truncated-record"])
def test_damaged_export_is_named(tmp_path, model, edit, message):
    d = model.save(tmp_path / "export")
    assert MultiTaskModel.from_checkpoint(d).tasks == TASKS
    edit(d)
    before = files(tmp_path)
    with pytest.raises(ValueError, match=message):
        MultiTaskModel.from_checkpoint(d)
    assert files(tmp_path) == before


# weights/<name>: hashed when it changed since the last check, not on every load

@pytest.fixture
def weights_dir(tmp_path, tiny_checkpoint, monkeypatch):
    """weights/tiny in a weights home of its own, holding the tiny random BERT."""
    monkeypatch.setenv("MINIMT_WEIGHTS", str(tmp_path / "weights"))
    d = tmp_path / "weights" / "tiny"
    shutil.copytree(tiny_checkpoint, d)
    return d


@pytest.mark.parametrize("by", ["path", "name"])
def test_changed_weights_are_hashed_unchanged_are_not(weights_dir, monkeypatch, by):
    source = str(weights_dir) if by == "path" else "tiny"  # both go through download.locate
    f, record = weights_dir / "model.safetensors", weights_dir / download.RECORD
    SentenceEncoder.from_pretrained(source)  # the first load: hashed and recorded
    seen = json.loads(record.read_text())["files"]["model.safetensors"]
    assert seen == {"sha256": sha256_of(f), "size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns}

    def no_hashing(path):
        raise AssertionError(f"{path} was hashed although it did not change")
    with monkeypatch.context() as m:
        m.setattr(download, "sha256_of", no_hashing)
        SentenceEncoder.from_pretrained(source)

    tamper(f)  # same size, another mtime (set explicitly: some filesystems keep coarse times)
    os.utime(f, ns=(seen["mtime_ns"], seen["mtime_ns"] + 1_000_000_000))
    before = files(weights_dir.parent)
    with pytest.raises(ValueError) as e:
        SentenceEncoder.from_pretrained(source)
    assert str(e.value).startswith(f"{f}: sha256 ") and f"recorded in {record} when it was first loaded" in str(e.value)
    assert f"delete {weights_dir} and run `python -m minimt weights tiny`" in str(e.value)
    assert files(weights_dir.parent) == before  # the record still holds the good hash


def test_weights_change_that_keeps_size_and_mtime_goes_unseen(weights_dir):
    """The price of not hashing every load, stated: a change that restores size and mtime is not seen."""
    f = weights_dir / "model.safetensors"
    SentenceEncoder.from_pretrained(weights_dir)
    stat = f.stat()
    tamper(f)
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    SentenceEncoder.from_pretrained(weights_dir)


def test_pinned_sha256_wins_over_the_record(weights_dir, monkeypatch):
    SentenceEncoder.from_pretrained(weights_dir)
    monkeypatch.setitem(download.KNOWN, "tiny", Pretrained("org/tiny", sha256={"model.safetensors": "0" * 64}))
    with pytest.raises(ValueError, match=r"does not match the 0{64} pinned for tiny in minimt/io/download.py"):
        SentenceEncoder.from_pretrained(weights_dir)


# leftovers of killed saves

def test_recover_puts_back_the_newest_intact_copy(tmp_path, model):
    run = tmp_path / "run"
    for step, pid in [(9, 100), (12, 2000), (5, 300)]:  # pid order, string order and step order all differ
        save(model, run / "last", step).rename(run / f".last.old-{pid}")
    tamper(run / ".last.old-2000" / "model.safetensors")  # the newest, damaged: passed over
    save(model, run / "tmp").rename(run / ".last.tmp-400")  # a save killed before its rename
    unrelated = [run / ".last.old-mine", run / ".last.tmp-400.bak", run / ".best.old-1", run / "notes.txt"]
    for p in unrelated[:-1]:
        p.mkdir()
    unrelated[-1].write_text("keep me")
    good = files(run / ".last.old-100")

    assert checkpoint.find(run / "last") == run / ".last.old-100"  # by recorded step, not by name
    messages = checkpoint.recover(run / "last")
    assert files(run / "last") == good and checkpoint.load_train_state(run / "last")["step"] == 9
    assert sorted(p.name for p in run.iterdir()) == sorted(["last"] + [p.name for p in unrelated])
    assert len(messages) == 4 and "put back the previous checkpoint .last.old-100 (step 9)" in "\n".join(messages)
    assert checkpoint.recover(run / "last") == []


def test_recover_with_the_checkpoint_in_place_removes_every_copy(tmp_path, model):
    run = tmp_path / "run"
    save(model, run / "best", 3).rename(run / ".best.old-7")
    d = save(model, run / "best", 8)
    good = files(d)
    assert len(checkpoint.recover(run / "best")) == 1
    assert [p.name for p in run.iterdir()] == ["best"] and files(d) == good


def test_recover_keeps_damaged_copies_when_none_is_intact(tmp_path, model):
    run = tmp_path / "run"
    save(model, run / "last", 3).rename(run / ".last.old-7")
    truncate(run / ".last.old-7" / "checkpoint.json")
    before = files(run)
    [message] = checkpoint.recover(run / "last")
    assert "no copy left by an interrupted write is intact" in message and ".last.old-7" in message
    assert files(run) == before
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*last .*\.last\.old-7 is damaged: UserError"):
        checkpoint.find(run / "last")
    assert checkpoint.recover(tmp_path / "no-run-yet" / "last") == []
