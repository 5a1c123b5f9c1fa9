"""The README's file table publishes line counts; they must be the files' real counts."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_line_counts_in_readme_are_current():
    rows = re.findall(r"^\| \[([^\]]+)\]\(([^)]+)\) \| (\d+) \|", (ROOT / "README.md").read_text(), re.M)
    assert len(rows) >= 10, "the README's file table was not found"
    for _, path, n in rows:
        actual = len((ROOT / path).read_text(encoding="utf-8").splitlines())
        assert int(n) == actual, f"README says {path} has {n} lines; it has {actual}"


def test_line_pointers_point_at_their_code():
    """`code` ([file:N](path#LN)): the README quotes the line it points at, so an edit that moves it fails here."""
    text = (ROOT / "README.md").read_text()
    pointers = re.findall(r"`([^`]+)`\s+\[[^\]]+\]\(([^)#]+)#L(\d+)\)", text)
    assert len(pointers) >= 8, "the Performance section's line pointers were not found"
    for code, path, line in pointers:
        actual = (ROOT / path).read_text(encoding="utf-8").splitlines()[int(line) - 1]
        assert code in actual, f"README points at {path} line {line} for `{code}`; that line is: {actual.strip()}"
