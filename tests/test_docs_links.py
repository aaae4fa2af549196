"""Every link and section reference in the documentation resolves.

Checks, over README.md, BUILD_NOTES.md and docs/*.md:
* every relative markdown link `[text](path)` names an existing file or folder;
* every `#anchor` (alone or after a path to a markdown file) names a heading of that file,
  with GitHub's slug rules (lower case, punctuation dropped, spaces to hyphens, "-1", "-2"
  for repeated headings);
and, over those files plus the Python sources (configs, latentcrs_jax, launch, tests):
* every `method.md section N` / `method.md N.M` reference names a numbered heading of
  docs/method.md;
* every quoted section reference such as `BUILD_NOTES.md, "Findings"` or `README "Results"`
  names a heading of that file;
and, in each markdown file, every `see "Section"` names a heading of the same file.
The checker itself is tested on small synthetic markdown strings first, so it fails on a
broken link.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
METHOD = ROOT / "docs" / "method.md"

_LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?\s*\)")
_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# "method.md section 1.5", "method.md 7.14", "method.md 3.3-3.5", "method.md 5, step 1".
_METHOD_REF = re.compile(
    r"method\.md(?:,)?\s+(?:section\s+|§\s*)?(\d+(?:\.\d+)?)(?:\s*-\s*(\d+(?:\.\d+)?))?"
)
# README "Results", BUILD_NOTES.md, "Findings", docs/deviations.md "Switches".
_QUOTED_REF = re.compile(
    r"\b(README|BUILD_NOTES|docs/[a-z_]+)(?:\.md)?,?\s+\"([^\"\n]{2,80})\"", re.IGNORECASE
)

# see "Dataset format" (a heading of the same document).
_SEE_REF = re.compile(r"\bsee \"([^\"]{2,80})\"", re.IGNORECASE)


def markdown_files() -> list[pathlib.Path]:
    """The documentation the checks cover."""
    return [ROOT / "README.md", ROOT / "BUILD_NOTES.md", *sorted((ROOT / "docs").glob("*.md"))]


def source_files() -> list[pathlib.Path]:
    """Python files whose comments and docstrings may cite the documentation."""
    this = pathlib.Path(__file__).resolve()
    files = []
    for folder in ("configs", "latentcrs_jax", "launch", "tests"):
        files += [p for p in sorted((ROOT / folder).rglob("*.py")) if p.resolve() != this]
    return files


def _strip_code(text: str) -> str:
    """The markdown without fenced code blocks and inline code spans."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else re.sub(r"`[^`]*`", "", line))
    return "\n".join(lines)


def headings(text: str) -> list[str]:
    """Heading texts of a markdown document, in order (fenced code ignored)."""
    found, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        m = None if fenced else _HEADING.match(line)
        if m:
            found.append(m.group(2))
    return found


def _plain(heading: str) -> str:
    """A heading as rendered text: links to their text, emphasis and code marks removed."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[`*]|(?<!\w)_|_(?!\w)", "", text)


def slugs(text: str) -> set[str]:
    """GitHub's anchors for every heading of `text`."""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(text):
        slug = re.sub(r"[^\w\- ]", "", _plain(heading).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(text: str, path: pathlib.Path) -> list[str]:
    """Relative links and anchors of the markdown `text` (living at `path`) that do not resolve."""
    body = _strip_code(text)
    bad = []
    for target in _LINK.findall(body) + _IMAGE.findall(body):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{path.name}: {target} (no such file)")
            continue
        if (
            anchor
            and dest.suffix == ".md"
            and anchor not in slugs(dest.read_text(encoding="utf-8"))
        ):
            bad.append(f"{path.name}: {target} (no such heading)")
    return bad


def _numbers(text: str) -> set[str]:
    """The section numbers of the numbered headings of `text` ("3", "3.3", "7.14")."""
    out = set()
    for heading in headings(text):
        m = re.match(r"(\d+(?:\.\d+)*)\.?\s", _plain(heading))
        if m:
            out.add(m.group(1))
    return out


def broken_method_refs(text: str, method_text: str) -> list[str]:
    """`method.md <number>` references in `text` naming no numbered heading of `method_text`."""
    numbers = _numbers(method_text)
    bad = []
    for m in _METHOD_REF.finditer(text):
        bad += [n for n in m.groups() if n and n not in numbers]
    return bad


def _target_file(name: str) -> pathlib.Path:
    name = name.lower()
    if name == "readme":
        return ROOT / "README.md"
    if name == "build_notes":
        return ROOT / "BUILD_NOTES.md"
    return ROOT / f"{name}.md"


def broken_quoted_refs(text: str, resolve=_target_file) -> list[str]:
    """`README "Section"`-style references in `text` naming no heading of that file."""
    bad = []
    for m in _QUOTED_REF.finditer(text):
        target = resolve(m.group(1))
        if not target.exists():
            bad.append(f"{m.group(1)} (no such file)")
            continue
        names = {_plain(h).strip().lower() for h in headings(target.read_text(encoding="utf-8"))}
        if m.group(2).strip().lower() not in names:
            bad.append(f'{m.group(1)} "{m.group(2)}"')
    return bad


def broken_see_refs(text: str) -> list[str]:
    """`see "Section"` references in the markdown `text` naming none of its own headings."""
    names = {_plain(h).strip().lower() for h in headings(text)}
    return [
        " ".join(m.group(1).split())
        for m in _SEE_REF.finditer(_strip_code(text))
        if " ".join(m.group(1).split()).lower() not in names
    ]


# ---------------------------------------------------------------------------------------------
# The checker on synthetic documents.
# ---------------------------------------------------------------------------------------------


def test_slugs_follow_github_rules():
    doc = "# Two commands\n## 3.3 Losses, as equations\n## `make run` *now*\n## Two commands\n"
    doc += "```\n# not a heading\n```\n"
    assert slugs(doc) == {
        "two-commands",
        "33-losses-as-equations",
        "make-run-now",
        "two-commands-1",
    }


def test_broken_link_and_anchor_are_reported(tmp_path):
    (tmp_path / "other.md").write_text("# Real heading\n", encoding="utf-8")
    doc = tmp_path / "doc.md"
    text = (
        "# Top\n"
        "[ok](other.md) [ok anchor](other.md#real-heading) [self](#top) [web](https://x.org/a)\n"
        "[gone](missing.md) [bad anchor](other.md#bug-switches) [bad self](#throughput)\n"
        "`[in code](nowhere.md)`\n"
    )
    doc.write_text(text, encoding="utf-8")
    assert broken_links(text, doc) == [
        "doc.md: missing.md (no such file)",
        "doc.md: other.md#bug-switches (no such heading)",
        "doc.md: #throughput (no such heading)",
    ]


def test_method_references_need_a_numbered_heading():
    method = "# Method\n## 3. The EM model\n### 3.3 Losses\n### 7.14 Centroid timing\n"
    text = "see method.md section 3.3, (method.md 7.14), method.md 3.3-3.5 and method.md 5, step 1"
    assert broken_method_refs(text, method) == ["3.5", "5"]


def test_quoted_references_need_a_heading(tmp_path):
    (tmp_path / "notes.md").write_text("# Notes\n## Findings\n", encoding="utf-8")
    text = 'see BUILD_NOTES.md, "Findings" and BUILD_NOTES "Bug switches"'
    bad = broken_quoted_refs(text, resolve=lambda name: tmp_path / "notes.md")
    assert bad == ['BUILD_NOTES "Bug switches"']


def test_see_references_need_a_heading_of_the_same_file():
    text = '# Doc\n## Bad input\nsee "Bad\ninput", see "Throughput", `see "In code"`\n'
    assert broken_see_refs(text) == ["Throughput"]


# ---------------------------------------------------------------------------------------------
# The repository's own documents.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.name)
def test_markdown_links_resolve(path):
    assert path.exists(), path
    assert broken_links(path.read_text(encoding="utf-8"), path) == []


def test_method_references_resolve():
    method_text = METHOD.read_text(encoding="utf-8")
    bad = {}
    for path in markdown_files() + source_files():
        found = broken_method_refs(path.read_text(encoding="utf-8"), method_text)
        if found:
            bad[str(path.relative_to(ROOT))] = found
    assert bad == {}


def test_quoted_section_references_resolve():
    bad = {}
    for path in markdown_files() + source_files():
        found = broken_quoted_refs(path.read_text(encoding="utf-8"))
        if found:
            bad[str(path.relative_to(ROOT))] = found
    assert bad == {}


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.name)
def test_see_references_resolve(path):
    assert broken_see_refs(path.read_text(encoding="utf-8")) == []
