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
