"""The module map in docs/design.md matches the code.

Every module of `latentcrs_jax/` (except `__init__.py`) and every binary of `launch/` is named
in the map's subsection for its package, and every module the map names exists. The map's
subsections are the `###` headings under "## Module map"; a heading names its package(s) in
backticks (`data/`, `models/` and `losses/`, `latentcrs_jax/` for the top level, `launch/`).
A module in a sub-package is named with its folder (`pretrain/ce.py`), or by file name on a
line that names the folder (`readers/` ... `base.py`).
"""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
PACKAGE = ROOT / "latentcrs_jax"


def module_map_sections(text: str) -> dict[str, str]:
    """The map's subsections: heading -> body, from "## Module map" to the next `##`."""
    m = re.search(r"^## Module map\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert m, "docs/design.md has no '## Module map' section"
    parts = re.split(r"^### (.*)$", m.group(1), flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _section_for(sections: dict[str, str], folder: str) -> str | None:
    """The body of the subsection whose heading names `folder/` in backticks."""
    for heading, body in sections.items():
        if f"`{folder}/`" in heading:
            return body
    return None


def is_named(body: str, rel: pathlib.PurePosixPath) -> bool:
    """Is the module at `rel` (relative to its package) named in the subsection `body`?"""
    name = rel.name
    subdirs = "/".join(rel.parts[:-1])
    if not subdirs:
        return re.search(rf"`(?:[\w/]+/)?{re.escape(name)}`", body) is not None
    if f"`{subdirs}/{name}`" in body or re.search(
        rf"`[\w/]*/{re.escape(f'{subdirs}/{name}')}`", body
    ):
        return True
    return any(f"`{subdirs}/`" in line and f"`{name}`" in line for line in body.splitlines())


def unmapped_modules(text: str, root: pathlib.Path = ROOT) -> list[str]:
    """Modules and binaries under `root` that the module map in `text` does not name."""
    sections = module_map_sections(text)
    missing = []
    for path in sorted((root / "latentcrs_jax").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        rel = path.relative_to(root / "latentcrs_jax")
        if len(rel.parts) == 1:
            body = _section_for(sections, "latentcrs_jax")
            inner = pathlib.PurePosixPath(rel.as_posix())
        else:
            body = _section_for(sections, rel.parts[0])
            inner = pathlib.PurePosixPath(*rel.parts[1:])
        if body is None or not is_named(body, inner):
            missing.append(f"latentcrs_jax/{rel.as_posix()}")
    launch_body = _section_for(sections, "launch") or ""
    for path in sorted((root / "launch").glob("*.py")):
        if path.name == "__init__.py":
            continue
        if not re.search(rf"`{re.escape(path.stem)}(?:\.py)?`", launch_body):
            missing.append(f"launch/{path.name}")
    return missing


def unknown_modules(text: str, root: pathlib.Path = ROOT) -> list[str]:
    """`.py` names in the module map that match no file of the package(s) their heading names."""
    bad = []
    for heading, body in module_map_sections(text).items():
        folders = re.findall(r"`([\w]+)/`", heading)
        bases = [
            root / f if f in ("latentcrs_jax", "launch") else root / "latentcrs_jax" / f
            for f in folders
        ]
        files = {p.relative_to(base).as_posix() for base in bases for p in base.rglob("*.py")}
        for name in re.findall(r"`([\w/]+\.py)`", body):
            stripped = name.split("/", 1)[1] if name.split("/")[0] in folders else name
            if not any(f == stripped or f.endswith("/" + stripped) for f in files):
                bad.append(f"{heading}: {name}")
    return bad


# ---------------------------------------------------------------------------------------------
# The checker on a synthetic repository.
# ---------------------------------------------------------------------------------------------


def _tree(tmp_path: pathlib.Path, files: list[str]) -> pathlib.Path:
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('"""x"""\n', encoding="utf-8")
    return tmp_path


_MAP = """# Design
## Module map
### Top level (`latentcrs_jax/`)
| `pipeline.py` | stages |
### `data/`
| `readers/` | raw files (`base.py`, `movielens.py`) |
| `dataset.py` | format |
### `training/`
| `pretrain/ce.py` | CE |
| `gone.py` | no longer there |
### `launch/` (binaries)
`run`, `common.py`
## After
| `data/` | not the map |
"""


def test_checker_finds_missing_and_unknown_modules(tmp_path):
    root = _tree(
        tmp_path,
        [
            "latentcrs_jax/__init__.py",
            "latentcrs_jax/pipeline.py",
            "latentcrs_jax/report.py",
            "latentcrs_jax/data/readers/base.py",
            "latentcrs_jax/data/readers/movielens.py",
            "latentcrs_jax/data/readers/generic.py",
            "latentcrs_jax/data/dataset.py",
            "latentcrs_jax/training/pretrain/ce.py",
            "latentcrs_jax/training/pretrain/bce.py",
            "latentcrs_jax/text/bert.py",
            "launch/run.py",
            "launch/common.py",
            "launch/chat.py",
        ],
    )
    assert unmapped_modules(_MAP, root) == [
        "latentcrs_jax/data/readers/generic.py",
        "latentcrs_jax/report.py",
        "latentcrs_jax/text/bert.py",
        "latentcrs_jax/training/pretrain/bce.py",
        "launch/chat.py",
    ]
    assert unknown_modules(_MAP, root) == ["`training/`: gone.py"]


# ---------------------------------------------------------------------------------------------
# The repository's own map.
# ---------------------------------------------------------------------------------------------


def test_every_module_is_in_the_module_map():
    missing = unmapped_modules(DESIGN.read_text(encoding="utf-8"))
    assert missing == [], f"add a row per module to docs/design.md, 'Module map': {missing}"


def test_the_module_map_names_only_existing_modules():
    unknown = unknown_modules(DESIGN.read_text(encoding="utf-8"))
    assert unknown == [], f"docs/design.md, 'Module map' names modules that do not exist: {unknown}"
