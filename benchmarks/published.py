"""Result files the README and docs quote. A benchmark run with --write-docs writes what it
measured to docs/results/<name>.md (and its pictures beside it), then copies each file into every
quoted block of README.md and docs/*.md:

    <!-- results: docs/results/exercise2.md -->
    ...the file's text, verbatim...
    <!-- /results -->

tests/test_results.py fails when a quoted block and its file differ, so no figure is copied by
hand or left stale. `python benchmarks/published.py` re-copies every file into its blocks.
"""
from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
_ARGV: list[str] = []
QUOTED = re.compile(r"(<!-- results: (\S+) -->\n)(.*?)(<!-- /results -->)", re.S)


def quoting_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def quoted_blocks(text: str) -> list[tuple[str, str]]:
    """(the file a block quotes, the block's text) for every quoted block of a markdown text."""
    return [(m.group(2), m.group(3)) for m in QUOTED.finditer(text)]


def sync() -> None:
    """Copy every result file into the blocks that quote it (a block whose file is not written yet
    stays as it is: tests/test_results.py reports it)."""
    def quote(m: re.Match) -> str:
        source = ROOT / m.group(2)
        return m.group(1) + source.read_text() + m.group(4) if source.exists() else m.group(0)

    for path in quoting_files():
        text = path.read_text()
        new = QUOTED.sub(quote, text)
        if new != text:
            path.write_text(new)


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "?"


def argv() -> list[str]:
    """The benchmark's command line as given (with --write-docs, which run() takes out of sys.argv)."""
    return _ARGV or sys.argv


def publish(name: str, markdown: str, pictures: dict[str, Path] | None = None) -> Path:
    """Write docs/results/<name>.md (and copy pictures there under their new names); sync the quotes."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    given = argv()
    command = " ".join(["python", f"benchmarks/{Path(given[0]).name}", *given[1:]])
    header = f"<!-- written by `{command}` at commit {_commit()}; do not edit: run it again -->\n"
    path = RESULTS / f"{name}.md"
    path.write_text(header + markdown.rstrip() + "\n")
    for new_name, source in (pictures or {}).items():
        shutil.copyfile(source, RESULTS / new_name)
    sync()
    print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return path


@contextlib.contextmanager
def recorded(name: str, write: bool) -> Iterator[None]:
    """Print as usual; with write, also publish what was printed (as a code block) as <name>.md."""
    buffer = io.StringIO()

    class Tee(io.TextIOBase):
        def write(self, text: str) -> int:
            buffer.write(text)
            return sys.__stdout__.write(text)

        def flush(self) -> None:
            sys.__stdout__.flush()

    with contextlib.redirect_stdout(Tee()):
        yield
    if write:
        publish(name, "```\n" + buffer.getvalue().rstrip() + "\n```")


def run(main: Callable[[], None]) -> None:
    """A benchmark's entry point: `--write-docs` (or `--write-docs=NAME`, for a variant such as
    workers.py --entry joblib) publishes what it prints as docs/results/<script or NAME>.md."""
    flags = [a for a in sys.argv[1:] if a == "--write-docs" or a.startswith("--write-docs=")]
    _ARGV[:] = sys.argv  # the command as given, for the result file's first line
    sys.argv = [a for a in sys.argv if a not in flags]
    name = flags[-1].partition("=")[2] if flags else ""
    with recorded(name or Path(sys.argv[0]).stem, bool(flags)):
        main()


if __name__ == "__main__":
    sync()
