"""Data: every format reads to the same Examples, every mistake names its file/row/column, splits never leak
duplicates, and each task-mixing plan is deterministic and has the shape its mode promises."""
import json
import math
import re
from collections import Counter

import pytest
import torch

from minimt.data import (Example, Source, check_labels, collate, label_maps, load_splits, plan_epoch, read_jsonl,
                         read_source)
from minimt.errors import UserError
from minimt.tokenizer import Tokenizer

SENTIMENT = {"sentiment": {"0": "negative", "1": "positive"}}


def write(path, text):
    path.write_bytes(text.encode("utf-8"))  # bytes: the test decides the line endings, not the platform
    return path


# --- reading ---------------------------------------------------------------------------------------------------

def test_tsv_quoted_fields_crlf_and_file_labels(tmp_path):
    # the multi-domain layout: CRLF records, a quoted text with an embedded LF and tab, domain = file name
    write(tmp_path / "books.tsv", 'sentence\tlabel\r\n"Great read\n\tloved it"\t1\r\n"Dull, ""very"" dull"\t0\r\n')
    write(tmp_path / "dvd.tsv", "sentence\tlabel\r\nplain text, no quotes\t1\r\n")
    src = Source("*.tsv", text="sentence", labels={"topic": "$file", "sentiment": "label"}, label_names=SENTIMENT)
    ex = read_source(src, tmp_path)
    assert [e.id for e in ex] == ["books.tsv:1", "books.tsv:2", "dvd.tsv:1"]
    assert ex[0].text == "Great read\n\tloved it"          # nothing stripped, the LF inside the quotes kept as LF
    assert ex[1].text == 'Dull, "very" dull'
    assert [e.labels for e in ex] == [{"topic": "books", "sentiment": "positive"},
                                      {"topic": "books", "sentiment": "negative"},
                                      {"topic": "dvd", "sentiment": "positive"}]


def test_unquoted_tsv_keeps_quote_characters(tmp_path):
    """AG News and SST-2 quote nothing: a '"' is text. With quoting on, the csv module would eat it."""
    path = write(tmp_path / "news.tsv", '"Big Blue" gains\tSci/Tech\nsaid ""no""\tWorld\n')
    src = Source(path=str(path), text="text", labels={"topic": "topic"}, columns=["text", "topic"], quoting=False)
    assert [ex.text for ex in read_source(src)] == ['"Big Blue" gains', 'said ""no""']
    quoted = read_source(Source(path=str(path), text="text", labels={"topic": "topic"}, columns=["text", "topic"]))
    assert quoted[0].text != '"Big Blue" gains'


def test_headerless_csv_with_columns_and_many_to_one_names(tmp_path):
    write(tmp_path / "news.csv", '"3","Title, one","Desc ""quoted"""\n"1","T2","D2"\n"4","T3","D3"\n')
    names = {"topic": {1: "World", 3: "Business", 4: "Sci/Tech"}}  # number keys match the cells "1", "3", "4"
    src = Source("news.csv", text="description", labels={"topic": "label"}, label_names=names,
                 columns=["label", "title", "description"])
    ex = read_source(src, tmp_path)
    assert [(e.id, e.text, e.labels["topic"]) for e in ex] == [
        ("news.csv:1", 'Desc "quoted"', "Business"), ("news.csv:2", "D2", "World"), ("news.csv:3", "D3", "Sci/Tech")]
    write(tmp_path / "ratings.csv", "Review Text,Rating\ngood,5\nbad,1\nmeh,2\nok,4\n")
    binary = {"sentiment": {"1": "negative", "2": "negative", "4": "positive", "5": "positive"}}
    ex = read_source(Source("ratings.csv", "Review Text", {"sentiment": "Rating"}, binary), tmp_path)
    assert [e.labels["sentiment"] for e in ex] == ["positive", "negative", "negative", "positive"]


def test_jsonl_null_and_missing_keys_are_no_label(tmp_path):
    rows = [{"text": "a", "topic": "x", "stars": 1}, {"text": "b", "topic": None, "stars": 2},
            {"text": "c", "stars": 1}, {"text": "d", "topic": "y", "stars": ""}]
    write(tmp_path / "r.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")  # a trailing blank line is fine
    src = Source("r.jsonl", text="text", labels={"topic": "topic", "sentiment": "stars"},
                 label_names={"sentiment": {"1": "neg", "2": "pos"}})
    ex = read_source(src, tmp_path)
    assert [e.id for e in ex] == ["r.jsonl:1", "r.jsonl:2", "r.jsonl:3", "r.jsonl:4"]
    assert [e.labels for e in ex] == [{"topic": "x", "sentiment": "neg"}, {"topic": None, "sentiment": "pos"},
                                      {"topic": None, "sentiment": "neg"}, {"topic": "y", "sentiment": None}]
    write(tmp_path / "r.data", (tmp_path / "r.jsonl").read_text())  # any extension, when format= says what it is
    assert read_source(Source("r.data", "text", {"topic": "topic"}, format="jsonl"), tmp_path)[0].text == "a"


def test_empty_label_cell_is_none_and_skip_empty_text_is_opt_in(tmp_path):
    write(tmp_path / "w.csv", "Review Text,Department Name\nnice top,Tops\n,Dresses\nno department,\n")
    src = Source("w.csv", "Review Text", {"topic": "Department Name"})
    with pytest.raises(ValueError, match=r"w\.csv: row 2 has no text in column 'Review Text'.*skip_empty_text"):
        read_source(src, tmp_path)
    src.skip_empty_text = True
    ex = read_source(src, tmp_path)
    assert [(e.id, e.labels["topic"]) for e in ex] == [("w.csv:1", "Tops"), ("w.csv:3", None)]  # ids keep the row


def test_limit_is_a_seeded_subset_in_file_order(tmp_path):
    write(tmp_path / "big.tsv", "sentence\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(100)))
    src = Source("big.tsv", "sentence", {"sentiment": "label"}, limit=10)
    a, b, c = read_source(src, tmp_path, seed=1), read_source(src, tmp_path, seed=1), read_source(src, tmp_path, seed=2)
    rows = [int(e.id.split(":")[1]) for e in a]
    assert len(a) == 10 and rows == sorted(rows) and a == b and a != c


# --- errors name the file, the row and the column ---------------------------------------------------------------

ERRORS = [  # (file name, content, Source keyword arguments, the message it must produce)
    ("empty.tsv", "", {}, r"empty\.tsv: the file has no rows"),
    ("header.tsv", "sentence\tlabel\r\n", {}, r"header\.tsv: the file has no rows"),
    ("cols.tsv", "text\tlabel\nhi\t1\n", {}, r"cols\.tsv: there is no column 'sentence'; its columns are \['text', 'label'\]"),
    ("lab.tsv", "sentence\tlabel\nhi\t1\n", {"labels": {"sentiment": "stars"}}, r"lab\.tsv: there is no column 'stars'"),
    ("notext.tsv", "sentence\tlabel\nhi\t1\n\t0\n", {}, r"notext\.tsv: row 2 has no text in column 'sentence'"),
    ("blank.tsv", "sentence\tlabel\nhi\t1\n   \t0\n", {}, r"blank\.tsv: row 2 has no text in column 'sentence'"),
    ("raw.tsv", "sentence\tlabel\nhi\t1\nyo\t2\n", {"label_names": SENTIMENT},
     r"raw\.tsv: row 2 column 'label' holds '2', which label_names\['sentiment'\] does not map; it maps \['0', '1'\]"),
    ("fields.tsv", "sentence\tlabel\nhi\t1\tx\n", {}, r"fields\.tsv: row 1 has 3 fields but there are 2 columns"),
    ("wrong.csv", "sentence\tlabel\nhi\t1\n", {}, r"wrong\.csv: there is no column 'sentence'; its columns are \['sentence\\tlabel'\]"),
    ("x.txt", "sentence\tlabel\nhi\t1\n", {}, r"x\.txt: cannot tell the format from the extension '\.txt'"),
    ("bad.jsonl", '{"sentence": "hi", "label": "1"}\n{"sentence": \n', {}, r"bad\.jsonl:2: not valid JSON"),
    ("num.jsonl", '{"sentence": 7, "label": "1"}\n', {}, r"num\.jsonl: row 1 has no text in column 'sentence'"),
    ("latin.tsv", b"sentence\tlabel\nsister\xf0city\t1\n", {}, r"latin\.tsv:2: not UTF-8 text"),
]


@pytest.mark.parametrize("name, content, kwargs, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_read_errors_name_file_row_and_column(tmp_path, name, content, kwargs, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    src = Source(name, **{"text": "sentence", "labels": {"sentiment": "label"}, **kwargs})
    with pytest.raises(ValueError, match=message):
        read_source(src, tmp_path)


def test_missing_file_names_the_pattern_and_the_data_dir(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=rf"nope/\*\.tsv: no file matches .*data dir {re.escape(str(tmp_path))}"):
        read_source(Source("nope/*.tsv", "sentence", {"s": "label"}), tmp_path)
    monkeypatch.setenv("MINIMT_DATA", str(tmp_path))  # the default data dir is decided when read, not at import
    with pytest.raises(FileNotFoundError, match=r"sst2/train.tsv: no file matches .*; fetch it with `make data` or "
                                                r"`python -m minimt data sst2`"):
        read_source(Source("sst2/train.tsv", "sentence", {"s": "label"}))


def test_bad_source_settings_are_refused():
    for kwargs in [{"format": "xml"}, {"split": "validation"}, {"limit": -1},
                   {"label_names": {"topic": {"1": "a"}}}]:  # topic is not among labels
        with pytest.raises(ValueError, match=r"Source a\.tsv"):
            Source("a.tsv", "sentence", {"sentiment": "label"}, **kwargs)


# --- splits and label maps --------------------------------------------------------------------------------------

def synthetic(tmp_path, n=400, duplicated=40):
    """Two domains x two sentiments, n rows each file; the first `duplicated` texts of a file appear twice."""
    for domain in ("kitchen", "garden"):
        rows = [f"{domain} review {i}\t{i % 2}" for i in range(n - duplicated)]
        rows += [f"{domain} review {i}\t{i % 2}" for i in range(duplicated)]
        write(tmp_path / f"{domain}.tsv", "sentence\tlabel\n" + "\n".join(rows) + "\n")
    return Source("*.tsv", "sentence", {"topic": "$file", "sentiment": "label"}, label_names=SENTIMENT)


def test_split_is_deterministic_disjoint_stratified_and_keeps_duplicates_together(tmp_path):
    src = synthetic(tmp_path)
    a, b, c = (load_splits([src], tmp_path, seed=s) for s in (0, 0, 1))
    assert a == b and a["train"] != c["train"]
    ids = {name: {e.id for e in part} for name, part in a.items()}
    assert len(ids["train"]) + len(ids["dev"]) + len(ids["test"]) == 800 == len(set.union(*ids.values()))
    texts = {name: {e.text for e in part} for name, part in a.items()}
    assert not (texts["train"] & texts["dev"] or texts["train"] & texts["test"] or texts["dev"] & texts["test"])
    for name, fraction in [("train", 0.8), ("dev", 0.1), ("test", 0.1)]:
        assert abs(len(a[name]) / 800 - fraction) < 0.02, (name, len(a[name]))
        strata = Counter((e.labels["topic"], e.labels["sentiment"]) for e in a[name])
        assert len(strata) == 4 and max(strata.values()) - min(strata.values()) <= 0.05 * len(a[name]), strata
    halves = load_splits([src], tmp_path, fractions=(0.5, 0.0, 0.5))
    assert len(halves["dev"]) == 0 and abs(len(halves["train"]) - 400) <= 8


def test_sources_with_a_split_go_there_as_they_are(tmp_path):
    src = synthetic(tmp_path)
    write(tmp_path / "held.jsonl", json.dumps({"sentence": "held out", "label": "1"}) + "\n")
    held = Source("held.jsonl", "sentence", {"sentiment": "label"}, SENTIMENT, split="test")
    splits = load_splits([src, held], tmp_path)
    assert Example("held.jsonl:1", "held out", {"sentiment": "positive"}) in splits["test"]
    assert sum(map(len, splits.values())) == 801
    with pytest.raises(ValueError, match=r"example held\.jsonl:1 comes from two sources"):
        load_splits([held, held], tmp_path)
    with pytest.raises(ValueError, match=r"no training examples"):
        load_splits([held], tmp_path)
    with pytest.raises(ValueError, match=r"fractions \(0\.8, 0\.1\) must be three numbers"):
        load_splits([src], tmp_path, fractions=(0.8, 0.1))


def test_label_maps_come_from_train_and_unseen_labels_are_named():
    train = [Example("t.tsv:1", "a", {"topic": "x", "sentiment": "pos"}),
             Example("t.tsv:2", "b", {"topic": "y", "sentiment": None}),
             Example("t.tsv:3", "c", {"topic": "x", "sentiment": "neg"})]
    dev = [Example("d.tsv:1", "d", {"topic": "y", "sentiment": "pos"}),
           Example("d.tsv:7", "e", {"topic": "z", "sentiment": "neg"})]
    maps = label_maps(train, ["topic", "sentiment"])
    assert maps == {"topic": ["x", "y"], "sentiment": ["neg", "pos"]}  # "z" is only in dev: not a label
    check_labels(dev[:1], maps, "dev")
    with pytest.raises(ValueError, match=r"dev example d\.tsv:7: topic label 'z' never occurs in training; "
                                         r"known labels: \['x', 'y'\]"):
        check_labels(dev, maps, "dev")
    with pytest.raises(ValueError, match=r"task 'topic' has 1 label\(s\) in the training split \['x'\]"):
        label_maps(train[::2], ["topic"])


def test_collate_gives_label_indices_and_minus_100_for_missing(minilm_dir):
    tok = Tokenizer(minilm_dir / "tokenizer.json", 256)
    batch = [Example("a:1", "I like fruits", {"topic": "food", "sentiment": None}),
             Example("b:1", "a longer text than the first one", {"sentiment": "pos"}),
             Example("a:2", "ok", {"topic": "cars", "sentiment": "neg"})]
    maps = {"topic": ["cars", "food"], "sentiment": ["neg", "pos"]}
    out = collate(batch, tok, maps)
    assert torch.equal(out["labels"]["topic"], torch.tensor([1, -100, 0]))
    assert torch.equal(out["labels"]["sentiment"], torch.tensor([-100, 1, 0]))
    assert out["labels"]["topic"].dtype == torch.long
    assert out["ids"] == tok.encode([e.text for e in batch])  # unpadded token-id lists, in batch order
    with pytest.raises(ValueError, match=r"batch example c:1: topic label 'boats' never occurs in training"):
        collate([Example("c:1", "x", {"topic": "boats"})], tok, maps)


# --- task mixing ------------------------------------------------------------------------------------------------

def mixed_train(n_a=300, n_b=100, both=20):
    """n_a rows labelled for task a only, n_b for b only, `both` for both."""
    return ([Example(f"a:{i}", "t", {"a": "x", "b": None}) for i in range(n_a)]
            + [Example(f"b:{i}", "t", {"a": None, "b": "y"}) for i in range(n_b)]
            + [Example(f"ab:{i}", "t", {"a": "x", "b": "y"}) for i in range(both)])


def test_joint_covers_every_example_once():
    train = mixed_train()
    plan = plan_epoch(train, ["a", "b"], 32, "joint", seed=0, epoch=0)
    assert len(plan) == math.ceil(420 / 32) and all(task is None for task, _ in plan)
    flat = [i for _, batch in plan for i in batch]
    assert sorted(flat) == list(range(420)) and flat != list(range(420))  # each once, and shuffled
    assert [len(b) for _, b in plan[:-1]] == [32] * (len(plan) - 1)


def test_round_robin_alternates_strictly_and_wraps_small_pools():
    train = mixed_train()  # pools: a = 320 rows, b = 120 rows
    plan = plan_epoch(train, ["a", "b"], 32, "round_robin", seed=0, epoch=0)
    assert len(plan) == math.ceil(320 / 32) + math.ceil(120 / 32) == 14
    assert [task for task, _ in plan] == ["a", "b"] * 7
    for task, batch in plan:
        assert 0 < len(batch) <= 32 and len(set(batch)) == len(batch)
        assert all(train[i].labels[task] is not None for i in batch)
    b_batches = [batch for task, batch in plan if task == "b"]
    first_pass = [i for batch in b_batches[:4] for i in batch]  # 120 rows = 3 full batches and one of 24
    assert [len(x) for x in b_batches[:4]] == [32, 32, 32, 24] and len(set(first_pass)) == 120
    assert len(b_batches) == 7  # ran out after 4, reshuffled, wrapped around


def test_proportional_task_frequencies_follow_the_temperature():
    train = mixed_train(n_a=3000, n_b=1000, both=0)
    for temperature in (1.0, 2.0, 100.0):
        counts = Counter()
        for epoch in range(40):  # 40 epochs x 126 batches: a long run
            plan = plan_epoch(train, ["a", "b"], 32, "proportional", seed=3, epoch=epoch, temperature=temperature)
            assert len(plan) == math.ceil(3000 / 32) + math.ceil(1000 / 32)
            assert all(train[i].labels[task] is not None for task, batch in plan for i in batch)
            counts.update(task for task, _ in plan)
        w = {"a": 3000 ** (1 / temperature), "b": 1000 ** (1 / temperature)}
        expected = w["a"] / (w["a"] + w["b"])  # 0.75 at T=1, 0.63 at T=2, about 0.5 at T=100
        assert abs(counts["a"] / sum(counts.values()) - expected) < 0.03, (temperature, counts)


@pytest.mark.parametrize("mode", ["joint", "round_robin", "proportional"])
def test_plan_is_a_pure_function_of_seed_and_epoch(mode):
    train = mixed_train()
    plan = plan_epoch(train, ["a", "b"], 16, mode, seed=7, epoch=2)
    assert plan == plan_epoch(train, ["a", "b"], 16, mode, seed=7, epoch=2)
    assert plan != plan_epoch(train, ["a", "b"], 16, mode, seed=7, epoch=3)
    assert plan != plan_epoch(train, ["a", "b"], 16, mode, seed=8, epoch=2)


def test_plan_errors():
    with pytest.raises(ValueError, match=r"mode 'mixed' is not known; use one of \('joint', 'round_robin', 'proportional'\)"):
        plan_epoch(mixed_train(), ["a"], 8, "mixed", 0, 0)
    with pytest.raises(ValueError, match=r"task 'c': no training example has a label for it"):
        plan_epoch(mixed_train(), ["a", "c"], 8, "round_robin", 0, 0)


# --- the real multi-domain data ---------------------------------------------------------------------------------

def test_real_multi_domain_sentiment():
    src = Source("multi_domain_sentiment/*.tsv", "sentence", {"topic": "$file", "sentiment": "label"},
                 label_names=SENTIMENT)
    examples = read_source(src)  # the default data dir
    per_domain = Counter(e.labels["topic"] for e in examples)
    assert per_domain == {d: 2000 for d in ("airline", "books", "dvd", "electronics", "kitchen")}
    assert Counter(e.labels["sentiment"] for e in examples) == {"negative": 5000, "positive": 5000}
    assert examples[0].id == "airline.tsv:1" and "\n\t" in next(e.text for e in examples if e.id == "books.tsv:1")
    assert sum(n - 1 for n in Counter(e.text for e in examples).values()) > 100  # the data has duplicate reviews
    splits = load_splits([src])
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [pytest.approx(8000, abs=30),
                                                                 pytest.approx(1000, abs=30),
                                                                 pytest.approx(1000, abs=30)]
    assert sum(map(len, splits.values())) == 10000
    texts = {name: {e.text for e in part} for name, part in splits.items()}
    assert not (texts["train"] & texts["test"] or texts["train"] & texts["dev"] or texts["dev"] & texts["test"])
    for name, share in [("dev", 100), ("test", 100)]:  # stratified: each (domain, sentiment) gets its tenth
        strata = Counter((e.labels["topic"], e.labels["sentiment"]) for e in splits[name])
        assert len(strata) == 10 and all(abs(n - share) <= 5 for n in strata.values()), (name, strata)


def test_a_lone_surrogate_in_jsonl_is_refused_when_read(tmp_path):
    """JSON may escape half a surrogate pair (\\udcff); that is no text, and the tokenizer would fail on it mid-run."""
    f = tmp_path / "rows.jsonl"
    f.write_text('{"text": "fine", "topic": "a"}\n{"text": "bad \\udcff here", "topic": "b"}\n', encoding="utf-8")
    lone = r"rows.jsonl:2: field 'text' holds a lone surrogate \('\\udcff' at position 4\)"
    with pytest.raises(UserError, match=lone):
        read_jsonl(f)
    with pytest.raises(UserError, match=r"rows.jsonl:2: field 'text'"):
        read_source(Source(path=str(f), text="text", labels={"topic": "topic"}))
