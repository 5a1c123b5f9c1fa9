"""The trace page (minimt/tools/page.py) and the numbers it draws: the page embeds exactly the dict `trace --json`
writes, it loads nothing, a pair's token parts sum to its cosine, and a model compared with itself, or the frozen
layers of a fine-tuned copy, show no change at all. tests/test_page_browser.py opens the pages in Chromium."""
import copy
import json

import pytest
import torch

from helpers import assert_close
from minimt import SentenceEncoder
from minimt.config import BertConfig
from minimt.errors import UserError
from minimt.freeze import freeze
from minimt.io import checkpoint
from minimt.model import BertModel
from minimt.multitask import MultiTaskModel
from minimt.similarity import cos_sim
from minimt.tokenizer import Tokenizer
from minimt.tools import page
from minimt.tools.cli import main
from minimt.tools.trace import compare, observe, pair, trace

TEXT = "The battery of my new phone dies by noon."
OTHER = "My phone is empty by midday."


def write_page(out_dir, name, *args):
    """`python -m minimt trace ARGS --json NAME.json --html NAME.html` -> (the JSON dict, the page's HTML)."""
    j, h = out_dir / f"{name}.json", out_dir / f"{name}.html"
    assert main(["trace", *args, "--json", str(j), "--html", str(h)]) == 0
    return json.loads(j.read_text(encoding="utf-8")), h.read_text(encoding="utf-8")


def train_step(model, frozen):
    """One AdamW step of `model` (a MultiTaskModel with a two-label "topic" head) with the `frozen` units held."""
    freeze(model, frozen)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    logits = model.classify(model(model.tokenizer.encode([TEXT, OTHER])))["topic"]
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    opt.step()
    return model.eval()


def fine_tuned_checkpoint(model_dir, path, frozen="top:1"):
    """The model at `model_dir` with a "topic" head, one step trained with `frozen` held, saved as a training
    checkpoint at `path`: what `--compare` is for (a model beside one fine-tuned from it)."""
    torch.manual_seed(0)
    model = train_step(MultiTaskModel(SentenceEncoder.from_pretrained(model_dir), {"topic": ["a", "b"]}), frozen)
    checkpoint.save(path, model, {"step": 1})
    return path


def tiny(minilm_dir, **overrides):
    """A random BertConfig.tiny encoder (with `overrides`) and MiniLM's tokenizer."""
    torch.manual_seed(0)
    cfg = BertConfig.tiny(vocab_size=30522, **overrides)
    return SentenceEncoder(BertModel(cfg).eval(), Tokenizer(minilm_dir / "tokenizer.json", cfg.max_seq_length))


def test_the_page_embeds_the_json_it_was_written_with(minilm_dir, tmp_path, capsys):
    """The real model: the page's data is the --json file, dict for dict, float for float."""
    t, html = write_page(tmp_path, "one", TEXT, "--model", str(minilm_dir))
    assert page.embedded(html) == t
    assert t["model"]["name"] == str(minilm_dir) and "pair" not in t and "compare" not in t
    L, nh, T = t["model"]["layers"], t["model"]["heads"], len(t["tokens"])
    assert (L, nh, T) == (6, 12, 12) and len(t["attention"]["weights"][L - 1][nh - 1]) == T
    assert f"wrote {tmp_path / 'one.html'}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.html", "one.json"]  # no temp left behind


def test_pair_and_compare_pages_embed_their_json(tiny_checkpoint, tmp_path, capsys):
    t, html = write_page(tmp_path, "pair", TEXT, "--model", str(tiny_checkpoint), "--pair", OTHER)
    assert page.embedded(html) == t and t["pair"]["text"] == OTHER
    assert f"pair: cos({TEXT!r}, {OTHER!r}) = {t['pair']['cosine']:.4f}" in capsys.readouterr().out

    tuned = fine_tuned_checkpoint(tiny_checkpoint, tmp_path / "tuned")
    t, html = write_page(tmp_path, "compare", TEXT, "--model", str(tiny_checkpoint), "--compare", str(tuned))
    assert page.embedded(html) == t
    c = t["compare"]
    assert c["trace"]["model"]["name"] == str(tuned) and list(c["trace"]["predictions"]) == ["topic"]
    assert c["by_layer"][0] == 0 and c["by_layer"][1] > 0, "top:1 froze layer 0 (and the embeddings below it)"
    out = capsys.readouterr().out
    assert f"compare with {tuned}" in out and f"layer 1 head {c['ranked'][0]['head']}: " in out


def test_the_page_loads_nothing():
    """No address for the browser to fetch: the page opens offline (the SVG namespace is a name, not a load)."""
    lower = page.TEMPLATE.lower()
    found = [w for w in ("src=", "href=", "url(", "@import", "<link", "<img", "<iframe", "fetch(", "xmlhttprequest",
                         "import(", "websocket") if w in lower]
    assert not found, f"the page template would load something: {found}"


def test_no_text_can_end_the_data_early():
    t = {"text": "</script><script>document.title = 'x'</script><!-- \u2028 ✓", "n": [0.1, -2.5e-7]}
    html = page.render(t)
    assert page.embedded(html) == t
    assert html.count("</script>") == page.TEMPLATE.count("</script>")
    with pytest.raises(UserError, match="holds no trace data"):
        page.embedded("<html></html>")


def test_pair_parts_sum_to_the_cosine(own_minilm):
    enc = own_minilm
    a, b = "I am eating apple", "I like fruits"
    p = pair(enc, a, b)
    Ta, Tb = len(enc.tokenizer.encode([a])[0]), len(p["tokens"])
    assert p["cosine"] == pytest.approx(cos_sim(*enc.encode([a, b])).item(), abs=1e-5)  # the README's 0.5398
    part = torch.tensor(p["part"], dtype=torch.float64)
    assert part.shape == (Ta, Tb) and part.sum().item() == pytest.approx(p["cosine"], abs=1e-9)
    assert_close(torch.tensor(p["part_a"], dtype=torch.float64), part.sum(dim=1), 1e-12, "A's token sums")
    assert_close(torch.tensor(p["part_b"], dtype=torch.float64), part.sum(dim=0), 1e-12, "B's token sums")
    tc = torch.tensor(p["token_cosine"])
    assert tc.shape == (Ta, Tb) and tc.abs().max() <= 1 + 1e-6
    # mean pooling: part(i, j) = (h_i . h_j) / (Ta Tb |mean_a| |mean_b|), from the model's own token vectors
    ha, hb = (observe(enc.model, enc.tokenizer.encode([x])[0]).stages[-1][1].double() for x in (a, b))
    assert_close(part, ha @ hb.T / (Ta * Tb * ha.mean(0).norm() * hb.mean(0).norm()), 1e-12, "mean pooling's parts")
    assert [x["token"] for x in p["tokens"]] == ["[CLS]", "i", "like", "fruits", "[SEP]"]


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_pair_parts_sum_for_every_pooling(tiny_encoder, pooling):
    tiny_encoder.config.pooling = pooling
    p = pair(tiny_encoder, TEXT, OTHER)
    assert sum(map(sum, p["part"])) == pytest.approx(p["cosine"], abs=1e-9)
    assert p["cosine"] == pytest.approx(cos_sim(*tiny_encoder.encode([TEXT, OTHER])).item(), abs=1e-5)
    if pooling == "cls":  # the sentence vectors are the [CLS] tokens': one pair holds the whole cosine
        assert p["part"][0][0] == pytest.approx(p["cosine"], abs=1e-9)


def test_a_model_compared_with_itself_has_not_changed(tiny_encoder):
    c = compare(trace(tiny_encoder, TEXT), trace(tiny_encoder, TEXT))
    assert c["change"] == [[0.0] * 4, [0.0] * 4] and c["by_layer"] == [0.0, 0.0]
    assert len(c["ranked"]) == 8 and "Jensen-Shannon" in c["measure"] and c["unit"] == "nats"


def test_frozen_layers_do_not_move(minilm_dir):
    """A 4-layer model trained one step with top:2 (the embeddings and layers 0-1 frozen): those layers' attention
    is bit for bit the same, the top two layers' is not, and the ranking puts the moved heads first."""
    before = tiny(minilm_dir, num_hidden_layers=4)
    model = MultiTaskModel(SentenceEncoder(copy.deepcopy(before.model), before.tokenizer), {"topic": ["a", "b"]})
    train_step(model, "top:2")
    after = SentenceEncoder(model.bert, model.tokenizer)
    c = compare(trace(before, TEXT), trace(after, TEXT))
    assert c["change"][0] == c["change"][1] == [0.0] * before.config.num_attention_heads
    assert min(c["change"][2] + c["change"][3]) > 0
    assert {r["layer"] for r in c["ranked"][:8]} == {2, 3}
    assert [r["change"] for r in c["ranked"]] == sorted((r["change"] for r in c["ranked"]), reverse=True)


def test_compare_needs_the_same_tokens_and_shape(minilm_dir):
    long = "word " * 40
    with pytest.raises(UserError, match="tokenize the text differently"):  # one model keeps 32 tokens, one 42
        compare(trace(tiny(minilm_dir), long), trace(tiny(minilm_dir, max_seq_length=48), long))
    with pytest.raises(UserError, match="differ in shape"):
        compare(trace(tiny(minilm_dir), TEXT), trace(tiny(minilm_dir, num_hidden_layers=3), TEXT))


def test_targets_and_models_are_checked_before_the_trace(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist: create it or choose another --html"):
        main(["trace", TEXT, "--model", str(tiny_checkpoint), "--html", str(tmp_path / "nowhere" / "t.html")])
    with pytest.raises(UserError, match="--json and --html both name"):
        main(["trace", TEXT, "--model", str(tiny_checkpoint), "--html", str(tmp_path / "t"),
              "--json", str(tmp_path / "t")])
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        main(["trace", TEXT, "--model", str(tiny_checkpoint), "--compare", str(tmp_path / "no-such-model")])
    assert capsys.readouterr().out == "", "the trace was printed before its targets and models were checked"
    assert not list(tmp_path.iterdir())
