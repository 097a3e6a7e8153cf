"""Every result the README and docs quote is the file a benchmark wrote (docs/results/), verbatim."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import published  # noqa: E402


def test_every_quoted_block_is_its_generated_file() -> None:
    quoted = {}
    for path in published.quoting_files():
        for name, block in published.quoted_blocks(path.read_text()):
            source = ROOT / name
            assert source.parent == published.RESULTS and source.exists(), f"{path.name} quotes {name}: no such file"
            assert block == source.read_text(), (f"{path.name} quotes {name}, which the benchmark wrote otherwise: "
                                                 "run `python benchmarks/published.py` (or the benchmark again)")
            quoted.setdefault(path.name, []).append(name)
    assert {"docs/results/exercise2-answer.md", "docs/results/exercise1.md"} <= set(quoted.get("README.md", [])), quoted


def test_every_result_file_says_which_command_wrote_it() -> None:
    files = sorted(published.RESULTS.glob("*.md"))
    assert files
    for path in files:
        first = path.read_text().splitlines()[0]
        assert first.startswith("<!-- written by `python benchmarks/") and "do not edit" in first, path.name


def test_every_picture_the_readme_shows_is_generated() -> None:
    """Result pictures live beside the files that describe them; README pictures of the UI and of a
    sweep's report come from docs/ui_screenshots.py."""
    text = (ROOT / "README.md").read_text()
    pictures = [line.split("](", 1)[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert pictures
    for picture in pictures:
        assert (ROOT / picture).exists(), picture
        assert picture.startswith(("docs/results/", "docs/ui-", "docs/sweep-")), picture


def test_every_local_link_of_the_readme_and_docs_exists() -> None:
    import re

    checked = 0
    for path in published.quoting_files():
        for match in re.finditer(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if not match.group(1).startswith(("http://", "https://")):
                assert (path.parent / match.group(1)).exists(), f"{path.name} links {match.group(1)}"
                checked += 1
    assert checked >= 10


def test_every_code_block_of_the_readme_and_docs_is_closed() -> None:
    """A page cut short (docs/scale-out.md once ended inside its workers' command) shows the rest
    of the page as code, or loses it."""
    pages = list(published.quoting_files())
    assert len(pages) >= 5
    for path in pages:
        fences = [line for line in path.read_text().splitlines() if line.startswith("```")]
        assert len(fences) % 2 == 0, f"{path.name}: a ``` block is not closed"
