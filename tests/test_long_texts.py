"""A long text is cut before it is tokenized (Tokenizer.head): its ids must be exactly those of tokenizing the whole
text and truncating, whatever the text holds, and a 45 MB line must not take gigabytes.

The reference is Hugging Face `tokenizers` itself on the whole text, truncated at max_seq_length."""
import functools
import os
import random
import subprocess
import sys
import textwrap

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.normalizers import NFKC, BertNormalizer

from minimt.pooling import normalize as l2_normalize
from minimt.tokenizer import CHARS_PER_TOKEN, Tokenizer


@functools.cache
def reference(path, max_seq_length):
    ref = HFTokenizer.from_file(str(path))
    ref.enable_truncation(max_length=max_seq_length)
    ref.no_padding()
    return ref


def whole(path, text, max_seq_length, lower=False):
    """The encoding without any cut: the whole text tokenized, then truncated (what encode did before head)."""
    return reference(path, max_seq_length).encode(text.lower() if lower else text)


@functools.cache
def tokenizer(path, max_seq_length, lower=False):
    return Tokenizer(path, max_seq_length, do_lower_case=lower)


def check(path, text, max_seq_length, lower=False):
    ours = tokenizer(path, max_seq_length, lower).encode([text])[0]
    ref = whole(path, text, max_seq_length, lower)
    i = next((i for i, (a, b) in enumerate(zip(ours, ref.ids)) if a != b), min(len(ours), len(ref.ids)))
    assert ours == ref.ids, f"first difference at token {i}: ours {ours[i:i + 5]}, " \
                            f"whole text {ref.ids[i:i + 5]} {ref.tokens[i:i + 5]}"
    return ref


SENTENCE = "The quick brown fox jumps over the lazy dog, and then it rests. "
# (name, text, cut): every row must give the ids of the whole text. cut: head reads it a window at a time;
# otherwise it has a long stretch with no ASCII space, punctuation or CJK ideograph to cut next to, read whole
LONG = [
    ("sentences", SENTENCE * 2_000, True),
    ("sentences_no_newline", ("word " * 9 + "end. ") * 5_000, True),
    ("spaces_then_words", " " * 1_000_000 + SENTENCE * 100, True),
    ("tabs_newlines_then_words", " \t\n\r" * 200_000 + SENTENCE * 100, True),
    ("words_newlines_words", "start here " + "\n" * 500_000 + SENTENCE * 100, True),
    ("giant_word", "a" * 300_000, True),
    ("giant_word_then_words", "ACGT" * 100_000 + " " + SENTENCE * 100, True),
    ("words_giant_word_words", "one two " + "x" * 200_000 + "." + SENTENCE * 100, True),
    ("giant_accented_word", "é" * 200_000 + " after", True),
    ("words_of_101", ("b" * 101 + " ") * 2_000, True),  # each one [UNK]
    ("words_of_100", ("c" * 100 + " ") * 2_000, True),  # each read in pieces
    ("cjk", "我们今天去公园散步，天气很好。" * 2_000, True),
    ("japanese", "これは日本語のテキストです、とても長い。" * 1_000, True),
    ("korean", "한국어 문장은 띄어쓰기가 있습니다. " * 1_000, True),
    ("accents", "Élève naïve à São Paulo, café crème brûlée. " * 1_000, True),
    ("combining_marks", "cafe\u0301 nai\u0308ve " * 2_000, True),
    ("zalgo", ("h" + "\u0301\u0316\u0327" * 50 + "i ") * 500, True),
    ("punctuation_only", "!?.,;:" * 50_000, True),
    ("dots_only", "." * 300_000, True),
    ("control_characters", "ab\x00cd\x07ef\x1f " * 5_000, True),
    ("controls_inside_words", ("wo" + "\x00" * 50 + "rd ") * 1_000, True),
    ("special_tokens", "[MASK] [SEP]text[CLS]x[UNK]" * 2_000, True),
    ("special_tokens_glued", "[MASK]" * 50_000, True),
    ("upper_case_greek", "ΟΔΟΣ. ΣΟΦΙΑ ΚΑΙ ΛΟΓΟΣ, ΑΣ.Β " * 2_000, True),
    ("mixed", "Hello, 世界! naïve café — “quotes” «guillemets» … 123.45 e-mail@x.org\t\n" * 1_000, True),
    ("base64", "data:image/png;base64," + "iVBORw0KGgoAAAANSUhEUgAA+/" * 20_000, True),
    ("ideographic_spaces_then_words", "\u3000" * 100_000 + SENTENCE * 100, False),
    ("no_break_spaces", "word\u00a0" * 50_000, False),
    ("controls_only", "\x00" * 200_000 + " after", False),
]


@pytest.mark.parametrize("name,text,cut", LONG, ids=[row[0] for row in LONG])
def test_long_text_ids_equal_the_whole_text(minilm_dir, name, text, cut):
    window = CHARS_PER_TOKEN * 256
    assert len(text) > window  # long enough to be cut
    ref = check(minilm_dir / "tokenizer.json", text, 256)
    if cut:  # head reads at most a window past the last token it keeps, less where it shortens spaces or a word
        assert len(tokenizer(minilm_dir / "tokenizer.json", 256).head(text)) <= ref.offsets[-2][1] + window


@pytest.mark.parametrize("text", ["ΟΔΟΣ. ΑΣ.Β " * 1_000, "İSTANBUL ΣΟΦΙΑ'Σ " * 1_000])
def test_do_lower_case_long_texts(minilm_dir, text):
    check(minilm_dir / "tokenizer.json", text, 256, lower=True)


# Two cuts placed by hand. max_seq_length 8 keeps 6 tokens and reads windows of 128 chars; FIVE is 5 tokens,
# [UNK] c d e f; the spaces move the window's end across what follows.
FIVE = "b" * 101 + " c d e f"


@pytest.mark.parametrize("spaces", range(12, 22))
def test_a_cut_never_splits_a_special_token(minilm_dir, spaces):
    """The window ends inside [MASK], the 6th token: cut after its "[", the head would end in a "[" token."""
    check(minilm_dir / "tokenizer.json", FIVE + " " * spaces + "[MASK]" + "g" * 300, 8)


@pytest.mark.parametrize("spaces", range(14, 24))
def test_do_lower_case_sees_what_follows_the_cut(minilm_dir, spaces):
    """Python lowers Σ to ς at a word's end, and an apostrophe doesn't end a word for it: ΑΣ'Β is ασ'β, while
    ΑΣ' alone, cut after the apostrophe, would be ας'. Tokens 5 and 6 are α ##σ."""
    check(minilm_dir / "tokenizer.json", FIVE[:-2] + " " * spaces + "ΑΣ'Β" + "g" * 300, 8, lower=True)


# Random texts of characters that test each step of head's reasoning: accents composed and not, combining marks of
# different classes (NFD sorts them), a spacing mark NFD sorts too (U+1D165), marks after spaces, characters the
# normaliser removes, non-ASCII spaces and punctuation, CJK in and out of the ranges cut next to, characters whose
# NFD or lower case is longer or is punctuation (U+1FEF -> `), special tokens whole and in halves, long runs.
PIECES = ["a", "b", "Z", "é", "e\u0301", "\u0301", "\u0316", "\u0327\u0301", "\U0001D165", "Σ", "ς", "İ", "ß",
          "ﬁ", "\u212b", "\u1fef", " ", "  ", "\t", "\n", "\r", "\u3000", "\u00a0", ".", "!", "-", "'", "[", "]",
          "。", "、", "—", "中", "文", "\U00020000", "\uf900", "あ", "\x00", "\x07", "\ufffd", "\u200b", "[MASK]",
          "[SEP]", "[MAS", "SK]", "a" * 60, "x" * 130, " " * 150, "\x00" * 40]
VARIANTS = {  # BertNormalizer settings the reasoning must hold for, besides MiniLM's own
    "minilm": None,
    "cased_no_strip": dict(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False),
    "strip_no_lower": dict(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=False),
    "raw": dict(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=False),
}


@pytest.fixture(scope="module")
def variants(minilm_dir, tmp_path_factory):
    paths = {"minilm": minilm_dir / "tokenizer.json"}
    for name, settings in VARIANTS.items():
        if settings is not None:
            tok = HFTokenizer.from_file(str(paths["minilm"]))
            tok.normalizer = BertNormalizer(**settings)
            paths[name] = tmp_path_factory.mktemp(name) / "tokenizer.json"
            tok.save(str(paths[name]))
    return paths


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("max_seq_length", [3, 8, 32])
def test_random_tricky_texts_equal_the_whole_text(variants, variant, max_seq_length):
    """Short windows (CHARS_PER_TOKEN * max_seq_length chars) put cuts, seams and stand-ins everywhere. Each of
    these mistakes fails here: a cut next to any character, or next to CJK the normaliser doesn't pad, a stand-in
    a character short, or standing for a stretch of several words."""
    rng = random.Random(f"{variant}{max_seq_length}")
    assert tokenizer(variants[variant], max_seq_length).cut_chars is not None
    for case in range(120):
        weights = [rng.random() ** 3 for _ in PIECES]  # each text leans on a few kinds of character
        text = "".join(rng.choices(PIECES, weights, k=rng.randint(50, 600)))
        try:
            check(variants[variant], text, max_seq_length, lower=case % 2 == 1)
        except AssertionError as e:
            raise AssertionError(f"case {case}, text {text!r}: {e}") from None


def test_other_tokenizers_are_tokenized_whole(minilm_dir, tmp_path):
    """A normaliser head's reasoning does not cover: no cut, and the ids of the whole text as before."""
    tok = HFTokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.normalizer = NFKC()
    tok.save(str(tmp_path / "tokenizer.json"))
    assert Tokenizer(tmp_path / "tokenizer.json", 16).cut_chars is None
    check(tmp_path / "tokenizer.json", "ﬁne words " * 500, 16)


def test_long_text_embedding_equals_the_whole_text(minilm, minilm_dir):
    text = "Élève naïve à São Paulo, café crème brûlée. " * 1_000 + "x" * 100_000
    ids = whole(minilm_dir / "tokenizer.json", text, minilm.max_seq_length).ids
    with torch.inference_mode():
        ref = minilm.embed_batch([ids]).float()[0]
    if minilm.config.normalize:
        ref = l2_normalize(ref)
    ours = minilm.encode(text, convert_to_tensor=True)
    diff = (ours - ref).abs().max().item()
    assert diff <= 1e-6, f"maxdiff = {diff:.2e}; first values {ours[:3].tolist()} vs {ref[:3].tolist()}"


MEMORY = textwrap.dedent("""
    import resource, sys
    from minimt import SentenceEncoder
    model = SentenceEncoder.from_pretrained(sys.argv[1])
    model.encode("warm up")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    for kind in ("sentences", "dna"):
        line = None  # freed before the next is made: the peak so far is the model and one line
        line = ("The quick brown fox jumps over the lazy dog, and then it rests. " * 703_125 if kind == "sentences"
                else "ACGT" * 11_250_000)  # 45 MB on one line; the DNA is one giant word
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        model.encode(line)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        print(kind, len(line), (after - before) / 2**20)
""")


def test_45_mb_line_encodes_in_bounded_memory(minilm_dir):
    """Peak RSS of a fresh interpreter while it encodes a 45 MB line: the peak before sits ~25 MB above the RSS of
    the moment, so growth under 100 MB bounds what encode used to ~125 MB. Whole, the tokenizer alone took ~155
    bytes a character, ~7 GB for this line."""
    out = subprocess.run([sys.executable, "-c", MEMORY, str(minilm_dir)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    for row in out.stdout.splitlines()[-2:]:
        kind, chars, grew_mb = row.split()
        print(f"{kind}: peak RSS grew {float(grew_mb):.1f} MB while encoding a {int(chars) / 1e6:.0f} MB line")
        assert int(chars) == 45_000_000
        assert float(grew_mb) < 100, f"{kind}: peak RSS grew {float(grew_mb):.0f} MB encoding a 45 MB line"
