"""What a reader of the README and of docs/ relies on: the files they link exist, their `make` commands are targets,
the functions and classes they cite are defined where they say, the README's reading-order table lists the package as
it is, and `make demo` prints what the README shows.

The citation convention: [`name`](minimt/file.py) in README.md, [`name`](../minimt/io/file.py) in docs/*.md, or, for
a method or attribute, [`Class.name`](minimt/file.py). Line numbers are never cited, so a code edit that keeps the
names needs no doc edit. (`python -m minimt similarity` printing 0.5398, as the README shows, is tests/test_cli.py's.)
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_PATH = ROOT / "README.md"
README = README_PATH.read_text(encoding="utf-8")
DOCS = sorted((ROOT / "docs").glob("*.md"))
BENCH_POINTER = ROOT / "tests" / "bench" / "README.md"
PAGES = [README_PATH] + DOCS + ([BENCH_POINTER] if BENCH_POINTER.exists() else [])
MAKE_PREFIX = r"(?:`|^\$ |^|# )"  # `make x` in prose; make x at the start of a command line or after a # comment
MAKE_X = MAKE_PREFIX + r"make ([a-z][\w-]*)"
# the core, in the order the README's table must list it; examples/train_loop.py comes before train.py
CORE = ["config", "model", "tokenizer", "pooling", "weights", "encoder", "multitask", "freeze", "objectives", "data",
        "train"]
# the generated blocks: which script writes which markers into which page
GENERATED = [("examples/05_study.py", "docs/study.md", ["study"]),
             ("tests/bench/common.py", "docs/performance.md", ["bench-summary", "bench"]),
             ("tests/bench/common.py", "tests/bench/README.md", ["bench-targets"])]
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
HISTORY = ("an earlier run", "the run before", "earlier versions", "were added after")


def rel(path):
    return str(path.relative_to(ROOT))


def text(page):
    return page.read_text(encoding="utf-8")


def without_code(md):
    """The markdown with its fenced code blocks left out."""
    return re.sub(r"^```.*?^```", "", md, flags=re.M | re.S)


def section(md, heading):
    """The text under `## heading`, up to the next `## `."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", md, re.M | re.S)
    assert m, f"the README has no '## {heading}' section"
    return m.group(1)


def test_the_readme_stays_a_tutorial():
    n = README.count("\n")
    assert n <= 350, f"README.md has {n} lines; the limit is 350 (aim for ~300): move reference material to docs/"


# -- the reading-order table ---------------------------------------------------------------------------------------

def reading_order():
    """[(path, stated line count)] of the README's reading-order table, in its order."""
    table = section(README, "Read the code in this order")
    rows = re.findall(r"^\| \[[^\]]+\]\(([^)]+)\) \|([^|]*)\| ", table, re.M)
    return [(path.rstrip("/"), lines.strip()) for path, lines in rows]


def test_the_reading_order_table_names_real_files_and_the_whole_package():
    rows = reading_order()
    assert len(rows) >= len(CORE), "the README's reading-order table was not found"
    paths = [p for p, _ in rows]
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"the reading-order table names files that do not exist: {missing}"
    package = ([rel(p) for p in sorted((ROOT / "minimt").glob("*.py")) if p.name not in ("__init__.py", "__main__.py")]
               + [rel(p.parent) for p in sorted((ROOT / "minimt").glob("*/__init__.py"))])
    unlisted = [p for p in package if p not in paths]
    assert not unlisted, f"add a row for each of these to the README's reading-order table: {unlisted}"


def test_the_reading_order_puts_the_core_first_in_order():
    paths = [p for p, _ in reading_order()]
    want = [f"minimt/{m}.py" for m in CORE[:-1]] + ["examples/train_loop.py", "minimt/train.py"]
    assert paths[:len(want)] == want, f"the reading-order table must start with the core in this order: {want}"
    subpackages = [p for p in paths if (ROOT / p).is_dir()]
    assert subpackages and paths[-len(subpackages):] == subpackages, "io/ and tools/ come last, after every module"


def test_the_reading_order_line_counts_match_the_files():
    for path, stated in reading_order():
        if (ROOT / path).is_dir():
            continue
        m = re.fullmatch(r"~(\d+)", stated)
        assert m, f"the reading-order row of {path} needs an approximate line count such as ~250, not {stated!r}"
        want, actual = int(m.group(1)), (ROOT / path).read_text(encoding="utf-8").count("\n")
        assert 0.6 * want <= actual <= 1.5 * want, f"{path} has {actual} lines; the README says ~{want}"


# -- make targets --------------------------------------------------------------------------------------------------

def make_targets():
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def test_every_make_command_is_a_target():
    unknown = {}
    for page in PAGES:
        for target in set(re.findall(MAKE_X, text(page), re.M)) - make_targets():
            unknown.setdefault(target, []).append(rel(page))
    assert not unknown, f"make targets the Makefile does not have (target: pages): {unknown}"


def test_the_readme_shows_the_two_commands_and_every_target_is_documented():
    assert re.search(r"^make demo\b", README, re.M) and re.search(r"^make test\b", README, re.M), \
        "the README's first commands are `make demo` and `make test`"
    listed = re.findall(r"^([a-z][\w-]*):.*## ", (ROOT / "Makefile").read_text(), re.M)  # what `make help` prints
    assert listed, "no `name: ... ## help` lines in the Makefile"
    everything = "\n".join(text(p) for p in PAGES)
    absent = [t for t in listed if not re.search(rf"{MAKE_PREFIX}make {t}\b", everything, re.M)]
    assert not absent, f"`make help` lists targets that neither the README nor docs/ mention: {absent}"


# -- citations and links -------------------------------------------------------------------------------------------

def defines(source, name):
    """`name` is a def, a class or a module-level assignment in source; `Class.attr` a def or an attribute of
    that class (a dataclass field, a class attribute or `self.attr = ...`)."""
    if "." not in name:
        return re.search(rf"^\s*(?:def|class) {name}\b|^{name}\s*[:=]", source, re.M) is not None
    cls, attr = name.split(".", 1)
    m = re.search(rf"^class {cls}\b.*?(?=^\S|\Z)", source, re.M | re.S)  # the class body, up to the next top level
    return m is not None and re.search(rf"^\s+(?:def {attr}\b|{attr}\s*[:=])|\bself\.{attr}\s*=", m.group(0),
                                       re.M) is not None


CITATION = re.compile(r"\[`([A-Za-z_][\w.]*)`\]\(((?:\.\./)*minimt/[\w/]+\.py)\)")
CITATIONS = sorted({(rel(page), name, path) for page in PAGES for name, path in CITATION.findall(text(page))})


def test_the_readme_and_docs_cite_code():
    pages = {page for page, _, _ in CITATIONS}
    assert "README.md" in pages, "the README cites no code as [`name`](minimt/file.py)"


@pytest.mark.parametrize("page, name, path", CITATIONS, ids=[f"{p}:{n}" for p, n, _ in CITATIONS])
def test_each_cited_name_is_defined_in_its_file(page, name, path):
    target = (ROOT / page).parent / path
    assert target.exists(), f"{page} cites `{name}` in {path}, which does not exist"
    assert defines(target.read_text(encoding="utf-8"), name), \
        f"{page} cites `{name}` in {path}, which does not define it"


def anchors(md):
    """GitHub's anchors for the headings of a markdown text (code blocks left out)."""
    headings = re.findall(r"^#+ (.+)$", without_code(md), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def links(page):
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", without_code(text(page)))
            if not t.startswith(("http://", "https://"))]


def test_links_and_anchors_resolve():
    """Every relative link of the README and of docs/ points at a file, and every #anchor at a heading of it."""
    broken = []
    for page in PAGES:
        for target in links(page):
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{rel(page)} -> {target}: no such file")
            elif anchor and anchor not in anchors(text(dest)):
                broken.append(f"{rel(page)} -> {target}: no heading there has that anchor")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_links_every_doc():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(README_PATH) if t.startswith("docs/")}
    assert len(DOCS) >= 3 and len(linked) >= 3, "the README links to at least 3 docs/ pages"
    unlinked = [rel(d) for d in DOCS if d.resolve() not in linked]
    assert not unlinked, f"the README never links to {unlinked}: link each docs/ page from the README"


# -- generated blocks and what docs say ----------------------------------------------------------------------------

def test_the_generated_blocks_have_their_markers():
    """examples/05_study.py and tests/bench/common.py write between these; without them they stop."""
    for script, page, names in GENERATED:
        assert Path(page).name in text(ROOT / script), f"{script} no longer writes into {page}"
        for name in names:
            for p in PAGES:
                want = 1 if rel(p) == page else 0
                for marker in (f"<!-- {name}:start -->", f"<!-- {name}:end -->"):
                    assert text(p).count(marker) == want, f"{rel(p)} should hold {marker} {want} time(s)"


def outside_generated(md):
    return re.sub(r"<!-- ([\w-]+):start -->.*?<!-- \1:end -->", "", md, flags=re.S)


def test_docs_describe_what_is():
    """No dates and no history outside the generated blocks (a table records when it was measured)."""
    found = []
    for page in PAGES:
        prose = outside_generated(text(page))
        found += [f"{rel(page)}: {d}" for d in DATE.findall(prose)]
        found += [f"{rel(page)}: {h!r}" for h in HISTORY if h in prose.lower()]
    assert not found, f"say what is, not when or what was: {found}"


def test_make_demo_prints_what_the_readme_shows(minilm_dir):
    """The README's first output block is examples/01_embed.py's output (`make demo`), line for line."""
    import subprocess
    import sys
    block = re.search(r"`make demo` prints:\n\n```\n(.*?)```", README, re.S)
    assert block, "the README has no `make demo` output block"
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "01_embed.py")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines() == block.group(1).strip().splitlines()
