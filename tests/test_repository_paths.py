"""Every repository path named in prose exists.

The repository explains itself in its docs, docstrings and comments, and those name files:
`relayer/bus.py`, `docs/ARCHITECTURE.md`, `gunicorn.conf.py`. A renamed or deleted file leaves
such names pointing nowhere, and a reader who follows one is lost. This test reads every
tracked file (`git ls-files`): the docstrings and comments of Python modules, and the whole text
of Markdown, shell, TOML and YAML files, the Dockerfile and the CI script; it collects what
looks like a repository path and checks that it exists.

What counts as a path:
- a name under a top-level folder of the repository with a file extension
  (`relayer/sim/server.py`, `docs/api/AUTH.md`), checked from the repository root;
- a relative Markdown link target (`[x](api/AUTH.md#errors)`), checked from the folder of the
  file that holds the link, as a Markdown renderer resolves it (and so are names in the link's
  text, which often repeats the target);
- a bare top-level file name (`README.md`, `gunicorn.conf.py`, `DESIGN.md`): it must exist at
  the root or beside the file that names it; in Markdown, also in `docs/` (a page naming
  another page). Code names a page by its path: `docs/UPSTREAM.md`, not `UPSTREAM.md`.

Trailing punctuation is stripped. Names that are not repository paths are listed in
`NOT_REPOSITORY_PATHS`, each with its reason.

Where prose points inside a page, the place must exist too: a link's `#anchor` must be one of
the target page's headings (as GitHub makes anchors), and a section named in quotes after a
page (`docs/RELAYER.md, "Leadership"`) must begin one of its headings or bold paragraph leads.
"""

from __future__ import annotations

import ast
import functools
import io
import re
import subprocess
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TOP_FOLDERS = ("relayer", "api", "scripts", "tests", "docs", "migrations")
EXTENSIONS = ("py", "md", "sh", "toml", "yml", "yaml", "ini", "lock", "mako")

# A path under a top-level folder. Not preceded by a path or URL character, so `/api/v1/...`
# (an HTTP route) and `https://host/docs/x.md` (someone else's site) are not taken for ours.
_FOLDERS, _EXTENSIONS = "|".join(TOP_FOLDERS), "|".join(EXTENSIONS)
FOLDER_PATH = re.compile(rf"(?<![\w./:-])((?:{_FOLDERS})/[\w./-]*?\.(?:{_EXTENSIONS}))(?![\w/-])")
# A Markdown link `[text](target)`, the target relative or a URL, maybe with an `#anchor`.
MARKDOWN_LINK = re.compile(r"\[([^\]\n]*)\]\(([^)\s]+)\)")
# A bare top-level file name: fixed names, and any upper-case Markdown page (`TRADING.md`).
BARE_NAME = re.compile(
    r"(?<![\w./-])(README\.md|gunicorn\.conf\.py|start_services\.sh|pyproject\.toml"
    r"|docker-compose\.yml|[A-Z][A-Z0-9_]*\.md)(?![\w/-])"
)

# A page followed by section names in quotes: `docs/OPERATIONS.md, "Redis faults"`,
# `docs/UPSTREAM.md ("Toss Securities")`. A section name starts with a capital letter.
SECTION_REFERENCE = re.compile(
    r"((?:docs/)?(?:api/)?[A-Z][A-Z0-9_]*\.md),?\s*\(?((?:\s*\"[A-Z][^\"=]*\",?)+)"
)

TEXT_SUFFIXES = (".md", ".sh", ".toml", ".yml", ".yaml")
# Files without one of those suffixes that are read whole all the same.
TEXT_FILES = ("Dockerfile", ".dockerignore", ".ci/run")

# Names that look like repository paths but are not, each with the reason.
# None today. Add one as `"name": "why it is not ours"` (say, a file on an operator's machine).
NOT_REPOSITORY_PATHS: dict[str, str] = {}


# Files whose prose is not checked, each with the reason.
NOT_CHECKED: dict[str, str] = {
    "tests/test_repository_paths.py": "this file: its prose shows names as they appear elsewhere",
}


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    return [name for name in out.decode().split("\0") if name]


def python_prose(source: str) -> list[tuple[int, str]]:
    """The docstrings and comments of a module, with the line each starts on."""
    found: list[tuple[int, str]] = []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return found
    for node in ast.walk(tree):
        if isinstance(
            node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        ) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                found.append((first.lineno, first.value.value))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found.append((token.start[0], token.string))
    return found


def prose_of(name: str) -> list[tuple[int, str]]:
    path = ROOT / name
    if not path.is_file():
        return []  # deleted in the work tree but still in the index
    text = path.read_text(encoding="utf-8", errors="replace")
    if name.endswith(".py"):
        return python_prose(text)
    if name.endswith(TEXT_SUFFIXES) or name in TEXT_FILES:
        return [(1, text)]
    return []


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@functools.cache
def places(page: Path) -> tuple[set[str], list[str]]:
    """A page's anchors, and its headings and bold paragraph leads (lower case, no markup)."""
    anchors: set[str] = set()
    titles: list[str] = []
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        heading = re.match(r"#{1,6} +(.*)", line)
        if heading:
            anchor = base = github_anchor(heading.group(1))
            number = 0
            while anchor in anchors:  # repeated headings get -1, -2, ...
                number += 1
                anchor = f"{base}-{number}"
            anchors.add(anchor)
            titles.append(heading.group(1))
        titles.extend(re.findall(r"\*\*([^*]+)\*\*", line))
    return anchors, [re.sub(r"[`*]", "", title).strip().lower() for title in titles]


def clean(target: str) -> str:
    target = target.split("#", 1)[0]
    return target.rstrip(".,;:'\"`*_")


def bare_name_exists(name: str, holder: str) -> bool:
    bases = [ROOT, (ROOT / holder).parent]
    if holder.endswith(".md"):
        bases.append(ROOT / "docs")  # a page naming another page: "see TRADING.md"
    return any((base / name).exists() for base in bases)


def missing_paths(holder: str, text: str, line: int = 1) -> list[str]:
    """The paths `text` (from file `holder`, starting at `line`) names that do not exist."""
    missing: list[str] = []

    def report(offset: int, name: str) -> None:
        if name in NOT_REPOSITORY_PATHS:
            return
        at = line + text.count("\n", 0, offset)
        missing.append(f"{holder}:{at}: {name}")

    rest = text
    if holder.endswith(".md"):
        here = (ROOT / holder).parent
        for match in MARKDOWN_LINK.finditer(text):
            # A link's text often repeats its target (`[api/AUTH.md](api/AUTH.md)` in docs/):
            # there a name may be relative to the page, like the target.
            for named in FOLDER_PATH.finditer(match.group(1)):
                name = clean(named.group(1))
                if not ((ROOT / name).exists() or (here / name).exists()):
                    report(match.start(), name)
            link = match.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", link):
                continue  # a URL (https:, mailto:)
            target = clean(link)
            page = here / target if target else ROOT / holder
            if not page.exists():
                report(match.start(), target)
            elif "#" in link and page.suffix == ".md":
                anchor = link.split("#", 1)[1]
                if anchor not in places(page)[0]:
                    report(match.start(), f"{target or holder}#{anchor}")
        # Links are checked: blank them out (keeping the line count) for the scans below.
        rest = MARKDOWN_LINK.sub(lambda m: " " * len(m.group(0)), text)
    for match in FOLDER_PATH.finditer(rest):
        name = clean(match.group(1))
        if not (ROOT / name).exists():
            report(match.start(), name)
    for match in BARE_NAME.finditer(rest):
        name = clean(match.group(1))
        if not bare_name_exists(name, holder):
            report(match.start(), name)
    for match in SECTION_REFERENCE.finditer(text):
        name = match.group(1)
        page = next((b / name for b in (ROOT, (ROOT / holder).parent, ROOT / "docs")
                     if (b / name).is_file()), None)
        if page is None:
            continue  # a missing page is reported above
        titles = places(page)[1]
        for section in re.findall(r'"([^"]+)"', match.group(2)):
            wanted = " ".join(section.split()).lower().rstrip(".:")
            if not any(title.startswith(wanted) for title in titles):
                report(match.start(), f'{name}, "{section}"')
    return missing


def test_every_path_named_in_prose_exists() -> None:
    missing: list[str] = []
    for name in tracked_files():
        if name in NOT_CHECKED:
            continue
        for line, text in prose_of(name):
            missing.extend(missing_paths(name, text, line))
    assert not missing, "paths named in prose that do not exist:\n" + "\n".join(missing)


def test_the_scan_finds_a_stale_path() -> None:
    """The scan itself works: it sees each kind of name, and lets real ones through."""
    stale = missing_paths(
        "docs/EXAMPLE.md",
        "See relayer/no_such_module.py, [the page](api/NO_SUCH.md#x), DESIGN.md section 2\n"
        "and `tests/gone/test_x.py`. Fine: relayer/bus.py, [auth](api/AUTH.md#errors),\n"
        "README.md, RELAYER.md, GET /api/v1/orders.py, https://example.com/docs/x.md,\n"
        '[fills](TRADING.md#the-fills-worker-python--m-apifills), docs/RELAYER.md, "Leadership".\n'
        "Stale: [auth](api/AUTH.md#no-such-heading), "
        'docs/OPERATIONS.md, "Redis faults", "No such section".',
    )
    assert stale == [
        "docs/EXAMPLE.md:1: api/NO_SUCH.md",
        "docs/EXAMPLE.md:5: api/AUTH.md#no-such-heading",
        "docs/EXAMPLE.md:1: relayer/no_such_module.py",
        "docs/EXAMPLE.md:2: tests/gone/test_x.py",
        "docs/EXAMPLE.md:1: DESIGN.md",
        'docs/EXAMPLE.md:5: docs/OPERATIONS.md, "No such section"',
    ]
    # Code names a page by its path; a string that is not a docstring is not prose.
    comments = python_prose('"""See UPSTREAM.md."""\nx = "docs/gone.md"  # scripts/gone.py\n')
    found = [m for line, text in comments for m in missing_paths("relayer/x.py", text, line)]
    assert found == ["relayer/x.py:1: UPSTREAM.md", "relayer/x.py:2: scripts/gone.py"]
