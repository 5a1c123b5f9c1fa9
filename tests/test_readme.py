"""What a reader of the README relies on: the files it names exist, its `make` commands are targets, the
functions and classes it cites are defined where it says, and `make demo` prints what it shows.

The citation convention, in README.md and tests/bench/README.md: [`name`](minimt/file.py) or, for a method or
attribute, [`Class.name`](minimt/file.py). Line numbers are never cited, so a code edit that keeps the names
needs no README edit. (`python -m minimt similarity` printing 0.5398, as the README shows, is tests/test_cli.py's.)
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = [ROOT / "README.md", ROOT / "tests" / "bench" / "README.md"]
README = READMES[0].read_text(encoding="utf-8")
MAKE_PREFIX = r"(?:`|^\$ |^|# )"  # `make x` in prose; make x at the start of a command line or after a # comment
MAKE_X = MAKE_PREFIX + r"make ([a-z][\w-]*)"


def section(text, heading):
    """The text under `## heading`, up to the next `## `."""
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"the README has no '## {heading}' section"
    return m.group(1)


def test_the_file_table_names_real_files_and_every_module_and_example():
    rows = re.findall(r"^\| \[[^\]]+\]\(([^)]+)\) \| ", section(README, "The files"), re.M)
    assert len(rows) >= 20, "the README's file table was not found"
    missing = [p for p in rows if not (ROOT / p).exists()]
    assert not missing, f"the README's file table names files that do not exist: {missing}"
    listed = set(rows)
    unlisted = [str(p.relative_to(ROOT)) for d in ("minimt", "examples") for p in sorted((ROOT / d).glob("*.py"))
                if str(p.relative_to(ROOT)) not in listed]
    assert not unlisted, f"add a line for each of these to the README's file table: {unlisted}"


def make_targets():
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def test_every_make_command_in_the_readme_is_a_target():
    mentioned = set(re.findall(MAKE_X, README, re.M))
    assert len(mentioned) >= 10, "no `make ...` commands found in the README"
    unknown = mentioned - make_targets()
    assert not unknown, f"the README mentions make targets the Makefile does not have: {sorted(unknown)}"


def test_every_target_make_help_lists_is_in_the_readme():
    listed = re.findall(r"^([a-z][\w-]*):.*## ", (ROOT / "Makefile").read_text(), re.M)  # what `make help` prints
    assert listed, "no `name: ... ## help` lines in the Makefile"
    absent = [t for t in listed if not re.search(rf"{MAKE_PREFIX}make {t}\b", README, re.M)]
    assert not absent, f"`make help` lists targets the README never mentions: {absent}"


def defines(source, name):
    """`name` is a def, a class or a module-level assignment in source; `Class.attr` a def or an attribute of
    that class (a dataclass field, a class attribute or `self.attr = ...`)."""
    if "." not in name:
        return re.search(rf"^\s*(?:def|class) {name}\b|^{name}\s*[:=]", source, re.M) is not None
    cls, attr = name.split(".", 1)
    m = re.search(rf"^class {cls}\b.*?(?=^\S|\Z)", source, re.M | re.S)  # the class body, up to the next top level
    return m is not None and re.search(rf"^\s+(?:def {attr}\b|{attr}\s*[:=])|\bself\.{attr}\s*=", m.group(0),
                                       re.M) is not None


CITATIONS = sorted({(readme.name if readme.parent == ROOT else "tests/bench/README.md", name, path)
                    for readme in READMES
                    for name, path in re.findall(r"\[`([A-Za-z_][\w.]*)`\]\(((?:\.\./\.\./)?minimt/\w+\.py)\)",
                                                 readme.read_text(encoding="utf-8"))})


def test_the_readmes_cite_code():
    assert len([c for c in CITATIONS if c[0] == "README.md"]) >= 20, "the README's [`name`](minimt/...) citations"


@pytest.mark.parametrize("readme, name, path", CITATIONS)
def test_each_cited_name_is_defined_in_its_file(readme, name, path):
    source = (ROOT / path.removeprefix("../../")).read_text(encoding="utf-8")
    found = defines(source, name)
    assert found, f"{readme} cites `{name}` in {path}, which does not define it"


def anchors(text):
    """GitHub's anchors for the headings of a markdown text (code blocks left out)."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_links_and_anchors_resolve():
    """Every relative link points at a file, and every #anchor at a heading of its file."""
    for readme in READMES:
        for target in re.findall(r"\]\(([^)\s]+)\)", readme.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            dest = (readme.parent / path).resolve() if path else readme
            assert dest.exists(), f"{readme.name} links to {target}, which does not exist"
            if anchor:
                assert anchor in anchors(dest.read_text(encoding="utf-8")), \
                    f"{readme.name} links to {target}; no heading there has that anchor"


def test_the_generated_blocks_have_their_markers():
    """tests/bench/common.py and examples/05_study.py write between these; without them they stop."""
    bench = READMES[1].read_text(encoding="utf-8")
    for text, name in ((README, "bench-summary"), (README, "study"), (bench, "bench")):
        assert text.count(f"<!-- {name}:start -->") == 1 and text.count(f"<!-- {name}:end -->") == 1, name


def test_make_demo_prints_what_the_readme_shows(minilm_dir):
    """The README's first output block is examples/01_embed.py's output (`make demo`), line for line."""
    import subprocess
    import sys
    block = re.search(r"`make demo` prints:\n\n```\n(.*?)```", README, re.S)
    assert block, "the README has no `make demo` output block"
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "01_embed.py")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines() == block.group(1).strip().splitlines()
