"""The trace page in a real browser: headless Chromium opens each kind of page (one text, a pair, two models) and
we read back what its scripts built (--dump-dom) and what it drew (--screenshot).

Checked on each page: no JavaScript error (the page writes every uncaught error into #errors, and Chromium's console
log is read too), the scripts ran to the end (data-ready="yes"), one cell per head and one chip per token,
#layer=1&head=2 draws that head (its cells selected, a T x T heatmap per model), a head that does not exist is a
message, and the screenshot is not blank.

Chromium is a system package (Debian: chromium). Without it these tests are skipped in `make test`, which needs no
system package; `make browser` installs it and runs them with MINIMT_BROWSER=required, where a missing browser is a
failure, not a skip. .ci/run runs `make browser`.
"""
import os
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from test_page import OTHER, TEXT, fine_tuned_checkpoint, write_page

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
HASH = "layer=1&head=2"  # a head every page here has: the tiny model is 2 layers x 4 heads, MiniLM 6 x 12


@pytest.fixture(scope="module")
def chromium():
    if BROWSER is None:
        if os.environ.get("MINIMT_BROWSER") == "required":
            pytest.fail("chromium is not installed: `make browser` installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed; `make browser` installs it and runs these checks")
    return BROWSER


@pytest.fixture(scope="module")
def pages(minilm_dir, tiny_checkpoint, tmp_path_factory):
    """{kind: (trace dict, page path)}: one text through the real all-MiniLM-L6-v2, a pair and two models on the
    tiny model (two layers, so the pages are quick to build and draw)."""
    d = tmp_path_factory.mktemp("pages")
    tuned = fine_tuned_checkpoint(tiny_checkpoint, d / "tuned")
    made = {"text": write_page(d, "text", TEXT, "--model", str(minilm_dir)),
            "pair": write_page(d, "pair", TEXT, "--model", str(tiny_checkpoint), "--pair", OTHER),
            "compare": write_page(d, "compare", TEXT, "--model", str(tiny_checkpoint), "--compare", str(tuned))}
    return {kind: (t, d / f"{kind}.html") for kind, (t, _) in made.items()}


def run(browser, tmp_path, url, *flags):
    """Headless Chromium on `url` -> its stdout and the console messages it logged. The virtual time budget lets
    the scripts finish before the DOM is dumped or the picture taken."""
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000", *flags, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


class Elements(HTMLParser):
    """Every element of a dumped DOM as (tag, attributes), and the text inside #errors."""
    def __init__(self, html):
        super().__init__()
        self.found, self.errors, self.in_errors = [], "", False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))
        self.in_errors = dict(attrs).get("id") == "errors"

    def handle_endtag(self, tag):
        self.in_errors = False

    def handle_data(self, data):
        if self.in_errors:
            self.errors += data

    def having(self, cls, tag=None):
        return [a for t, a in self.found if cls in a.get("class", "").split() and tag in (None, t)]

    def by_id(self, id_):
        return next(a for _, a in self.found if a.get("id") == id_)


def open_page(browser, tmp_path, path, fragment=""):
    """The page after its scripts ran, checked for errors -> its Elements."""
    out, console = run(browser, tmp_path, path.as_uri() + (f"#{fragment}" if fragment else ""), "--dump-dom")
    dom = Elements(out)
    uncaught = [line for line in console if "Uncaught" in line or "Error" in line]
    assert not dom.errors.strip() and not uncaught, f"JavaScript errors: {dom.errors.strip()} {uncaught}"
    assert dom.by_id("page") is not None and 'data-ready="yes"' in out, "the page's script did not run to the end"
    return dom


def models(t):
    return [t] + ([t["compare"]["trace"]] if "compare" in t else [])


@pytest.mark.parametrize("kind", ["text", "pair", "compare"])
def test_the_page_draws_every_head_and_token(chromium, pages, kind, tmp_path):
    t, path = pages[kind]
    L, nh, T = t["model"]["layers"], t["model"]["heads"], len(t["tokens"])
    dom = open_page(chromium, tmp_path, path, HASH)
    n = len(models(t))
    assert len(dom.having("head", "div")) == n * L * nh
    chips = n * T + (T + len(t["pair"]["tokens"]) if kind == "pair" else 0)  # a pair shows A and B once more
    assert len(dom.having("token", "span")) == chips

    # #layer=1&head=2: that head is selected in each model's grid and drawn as a T x T heatmap per model
    selected = dom.having("selected")
    assert len(selected) == n and all((a["data-layer"], a["data-head"]) == ("1", "2") for a in selected)
    view = dom.by_id("head-view")
    assert (view.get("data-layer"), view.get("data-head")) == ("1", "2")
    pair_cells = 2 * T * len(t["pair"]["tokens"]) if kind == "pair" else 0  # its two token-by-token maps
    assert len(dom.having("cell", "rect")) == n * T * T + pair_cells


def test_without_a_head_in_the_address_the_page_picks_one(chromium, pages, tmp_path):
    """One model: the most focused head (lowest mean entropy); two: the head that changed most."""
    t, path = pages["text"]
    ent = [h["mean_entropy"] for layer in t["heads"] for h in layer]
    best = ent.index(min(ent))
    view = open_page(chromium, tmp_path, path).by_id("head-view")
    assert (int(view["data-layer"]), int(view["data-head"])) == divmod(best, t["model"]["heads"])
    t, path = pages["compare"]
    top = t["compare"]["ranked"][0]
    view = open_page(chromium, tmp_path, path).by_id("head-view")
    assert (int(view["data-layer"]), int(view["data-head"])) == (top["layer"], top["head"])


def test_a_head_that_does_not_exist_is_a_message(chromium, pages, tmp_path):
    t, path = pages["pair"]
    out, _ = run(chromium, tmp_path, path.as_uri() + "#layer=7&head=0", "--dump-dom")
    assert "There is no head layer=7 head=0: layers 0-1, heads 0-3." in out
    assert not Elements(out).errors.strip() and not Elements(out).having("selected")


def png_pixels(path):
    """A PNG -> (height, width, channels) uint8 array. Pillow comes with matplotlib, which `make setup` installs."""
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("kind", ["text", "pair", "compare"])
def test_the_screenshot_is_not_blank(chromium, pages, kind, tmp_path):
    _, path = pages[kind]
    png = tmp_path / f"{kind}.png"
    run(chromium, tmp_path, path.as_uri() + f"#{HASH}", f"--screenshot={png}", "--window-size=1200,1400")
    px = png_pixels(png)
    assert px.shape == (1400, 1200, 3)
    inked = (px.min(axis=2) < 200).mean()  # the share of pixels that are clearly not white: text, maps, charts
    colours = len(np.unique(px.astype(np.int32) @ [1 << 16, 1 << 8, 1]))  # distinct RGB values
    assert inked > 0.02 and colours > 50 and px.std() > 10, (inked, colours, px.std())
