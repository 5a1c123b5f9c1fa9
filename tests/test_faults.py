"""The fault suite: bad input and a hostile environment, one parametrised row each. Every row asserts the exit code,
a one-line message that names the problem (no traceback), and that nothing written before was lost.

Rows that need a process of their own (kill -9, a full disk, a read-only directory) are in test_atomic_outputs.py;
damaged checkpoints and weights in test_integrity.py; two runs in one directory in test_rundir.py."""
import json
import subprocess
import sys

import pytest

from minimt.tools.cli import run
from minimt.data import Source, read_source
from minimt.train import TrainConfig, train


def cli(*argv, monkeypatch=None):
    """(rc, message) of `python -m minimt ARGV`, run in this process (the top-level handler included)."""
    old = sys.argv
    sys.argv = ["minimt", *map(str, argv)]
    try:
        run()
    except SystemExit as e:
        code = e.code
        return (0, "") if code in (0, None) else (1, code) if isinstance(code, str) else (code, "")
    finally:
        sys.argv = old
    return 0, ""


@pytest.fixture(scope="module")
def trained(data_file, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "run"
    train(TrainConfig(sources=[{"path": str(data_file), "text": "text", "labels": {"topic": "topic", "mood": "mood"}}],
                      model=str(tiny_checkpoint), epochs=1, batch_size=16, out_dir=str(out)))
    return out


@pytest.fixture(scope="module")
def config(data_file, tiny_checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "train.json"
    path.write_text(json.dumps({"sources": [{"path": str(data_file), "text": "text", "labels": {"topic": "topic"}}],
                                "model": str(tiny_checkpoint), "epochs": 1}))
    return path


TRAIN_SETTINGS = [  # (override, what the message must say)
    ("--batch_size=2.5", "batch_size=2.5 must be a whole number"),
    ("--warmup=5", "warmup=5 is out of range: it must be a fraction of the steps, in [0, 1]"),
    ("--eval_every=-1", "eval_every=-1 is out of range"),
    ("--grad_accum=0", "grad_accum=0 is out of range"),
    ("--lr=0", "lr=0 is out of range"),
    ("--dropout=1.5", "dropout=1.5 is out of range"),
    ("--bf16=maybe", "bf16='maybe' must be true or false"),
    ("--freeze=backbone_", "target 'backbone_' is not known"),
    ("--freeze=head:nope", "no task 'nope'"),
    ("--task_weights={\"nope\":1}", "task_weights names ['nope'], which no source defines"),
    ("--task_weights={\"topic\":-1}", "each weight must be a number >= 0"),
    ("--mixing=mixed", "task mixing mode 'mixed' is not known"),
    ("--learning_rate=1", "unknown setting 'learning_rate'"),
    ("--epochs=two", "epochs='two' must be a whole number"),
    ("--resume=true --overwrite=true", "resume and overwrite exclude each other"),
    ("--compile=true --unfreeze_every=5", "compile and unfreeze_every exclude each other"),
    ("--compile=1", "compile=1 must be true or false"),
]


@pytest.mark.parametrize("override, says", TRAIN_SETTINGS, ids=[o for o, _ in TRAIN_SETTINGS])
def test_train_settings(config, tmp_path, override, says):
    rc, msg = cli("train", config, f"--out_dir={tmp_path / 'run'}", *override.split(" "))
    assert rc == 1 and says in msg and "\n" not in msg, msg
    assert not (tmp_path / "run" / "last").exists()


def bad_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    return path


FILES = [  # (file name, bytes, what the message must say)
    ("c.json", b'{"epochs": 1,', "not valid JSON at line 1"),
    ("c.json", b"[1, 2]", "holds a JSON list; a training config is one JSON object"),
    ("c.json", b'{"epochs": "\xff"}', "not UTF-8 text"),
]


@pytest.mark.parametrize("name, content, says", FILES, ids=[s for _, _, s in FILES])
def test_bad_config_files(tmp_path, name, content, says):
    path = bad_file(tmp_path, name, content)
    rc, msg = cli("train", path)
    assert rc == 1 and str(path) in msg and says in msg and "\n" not in msg, msg


READERS = [  # (file name, bytes, Source fields, what the message must say)
    ("d.jsonl", b'{"text": "a", "t": "x"}\n{"text": \n', {}, "d.jsonl:2: not valid JSON"),
    ("d.jsonl", b'{"text": "a", "t": "x"}\n["text"]\n', {}, "d.jsonl:2: a JSON list, not an object"),
    ("d.jsonl", b'{"text": "a", "t": "x"}\n\n{"text": "\xff", "t": "y"}\n', {}, "d.jsonl:3: not UTF-8 text"),
    ("d.csv", b"text,t\na,x\nb\xff,y\n", {}, "d.csv:3: not UTF-8 text"),
    ("d.csv", b"text,t\na,x,extra\n", {}, "row 1 has 3 fields but there are 2 columns"),
    ("d.csv", b"text,t\na,x\n", {"text": "body"}, "'body'"),
]


@pytest.mark.parametrize("name, content, fields, says", READERS, ids=[r[3] for r in READERS])
def test_data_readers_name_file_and_line(tmp_path, name, content, fields, says):
    path = bad_file(tmp_path, name, content)
    with pytest.raises(ValueError) as e:
        read_source(Source(**{"path": str(path), "text": "text", "labels": {"t": "t"}, **fields}))
    assert says in str(e.value) and str(path.name) in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_byte_order_mark_is_allowed_in_jsonl_as_in_csv(tmp_path):
    for name, content in (("d.jsonl", b'\xef\xbb\xbf{"text": "a", "t": "x"}\n'), ("d.csv", b"\xef\xbb\xbftext,t\na,x\n")):
        rows = read_source(Source(path=str(bad_file(tmp_path, name, content)), text="text", labels={"t": "t"}))
        assert [(ex.text, ex.labels) for ex in rows] == [("a", {"t": "x"})]


def checkpoint_rows(trained, tmp_path):
    jsonl = bad_file(tmp_path, "in.jsonl", b'{"text": "fine"}\n{"txt": "no text field"}\n')
    broken = bad_file(tmp_path, "broken.jsonl", b'{"text": "fine"}\n{"text": "cut\n')
    data = bad_file(tmp_path, "eval.csv", b"text,topic\nhello,a\n")
    return [
        (["evaluate", trained / "best", "--data", data, "--label", "nope=topic"], "has no head for"),
        (["evaluate", trained / "best", "--data", data, "--label", "topic"], "needs --label TASK=COLUMN"),
        (["evaluate", trained / "best", "--data", data, "--label", "topic=missing"], "'missing'"),
        (["predict", trained / "best", "--jsonl", jsonl], "in.jsonl:2: each line must be a JSON object with a string"),
        (["predict", trained / "best", "--jsonl", broken], "broken.jsonl:2: not valid JSON"),
        (["predict", trained / "best", "--jsonl", tmp_path], "Is a directory"),
        (["predict", trained / "missing", "a text"], "no checkpoint directory there"),
        (["similarity", "a\udcffb", "c"], "not valid Unicode"),
        (["similarity", "a", "b", "--model", tmp_path / "nothing" / "here"], "no checkpoint directory there"),
        (["embed", "--input", tmp_path, "--output", tmp_path / "x.npy"], "Is a directory"),
        (["embed", "--input", tmp_path / "none.txt", "--output", tmp_path / "x.npy"], "none.txt"),
        (["train", tmp_path / "none.json"], "none.json"),
        (["embed", "--input", bad_file(tmp_path, "latin.txt", b"fine\ncaf\xe9\n"), "--output", tmp_path / "y.npy"],
         "latin.txt:2: not UTF-8 text"),
        (["embed", "a", "--output", "/dev/null"], "is not a regular file"),
    ]


@pytest.mark.parametrize("row", range(14))
def test_cli_bad_input(trained, tmp_path, row):
    argv, says = checkpoint_rows(trained, tmp_path)[row]
    before = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    rc, msg = cli(*argv)
    assert rc == 1 and says in msg and "\n" not in msg, msg
    assert {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()} == before  # nothing lost or changed


def test_no_traceback_at_the_top_level(tmp_path):
    """The same handler as a real process: rc 1 and one line on stderr."""
    out = subprocess.run([sys.executable, "-m", "minimt", "train", str(bad_file(tmp_path, "c.json", b"{"))],
                         capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "not valid JSON" in out.stderr, out.stderr


def test_a_real_bug_still_shows_its_traceback(monkeypatch):
    import minimt.tools.cli as main_module
    monkeypatch.setattr(main_module, "main", lambda: [][1])  # an IndexError is no expected error
    with pytest.raises(IndexError):
        main_module.run()


@pytest.mark.parametrize("source, says", [
    ({"limit": "5"}, "limit='5' must be a int"),
    ({"labels": "topic"}, "labels='topic' must be a dict"),
    ({"txt": "text"}, "sources[0]: unknown field(s) ['txt']"),
])
def test_source_fields_are_checked(data_file, tiny_checkpoint, tmp_path, source, says):
    base = {"path": str(data_file), "text": "text", "labels": {"topic": "topic"}}
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"sources": [{**base, **source}], "model": str(tiny_checkpoint)}))
    rc, msg = cli("train", cfg, f"--out_dir={tmp_path / 'run'}")
    assert rc == 1 and says in msg and "\n" not in msg, msg


@pytest.mark.parametrize("command", ["embed", "predict"])
def test_an_output_that_is_its_own_input_is_refused(trained, tmp_path, command):
    src = tmp_path / ("texts.txt" if command == "embed" else "rows.jsonl")
    src.write_text("first text\nsecond text\n" if command == "embed" else '{"text": "first", "id": 7}\n')
    before = src.read_bytes()
    argv = (["embed", "--input", src, "--output", src] if command == "embed"
            else ["predict", trained / "best", "--jsonl", src, "--output", tmp_path / "." / src.name])
    rc, msg = cli(*argv)
    assert rc == 1 and "is also the input" in msg and "choose another --output" in msg, msg
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_evaluate_takes_an_export_with_data_and_says_why_not_without(trained, data_file, tmp_path):
    export = tmp_path / "export"
    assert cli("export", trained / "best", export)[0] == 0
    rc, msg = cli("evaluate", export)
    assert rc == 1 and "is an export, which records no training data" in msg and "--data FILE" in msg, msg
    out = tmp_path / "eval"
    assert cli("evaluate", export, "--data", data_file, "--label", "topic=topic", "--out", out) == (0, "")
    assert json.loads((out / "metrics.json").read_text())["topic"]["n"] == 120
