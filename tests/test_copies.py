"""`# Copied from <module>.<name>` copies equal their source (modulo the declared renames).

Model folders are copied flat into saved model folders, so they cannot import `processing` or each other; where
they need the same code, one place is the source and the others carry a marked copy, the way transformers'
utils/check_copies.py keeps its models in step. The marker stands on the line right above the copied `def`,
`class` or assignment (above its decorators, if any):

    # Copied from modeling_dig.modeling_dig.eager_attention_forward
    # Copied from processing.charsets.CharsetAdapter with Charset->Caption, charset->caption

`with A->B, C->D` applies the replacements, in order, to the source before comparing.
"""

from __future__ import annotations

import ast
import re
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^(?P<indent>[ \t]*)# Copied from (?P<target>[\w.]+)(?: with (?P<renames>.+))?\s*$")


@dataclass(frozen=True)
class Copy:
    file: Path
    line: int  # 1-based line of the marker
    target: str
    renames: tuple[tuple[str, str], ...]


def _defined_name(node: ast.stmt) -> str | None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    return None


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def _segment(lines: list[str], node: ast.stmt) -> str:
    """The statement's lines (decorators included), dedented, trailing white space dropped."""
    text = "".join(lines[_first_line(node) - 1 : node.end_lineno])
    return "\n".join(line.rstrip() for line in textwrap.dedent(text).splitlines())


def _statements(tree: ast.AST) -> list[ast.stmt]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.stmt)]


def _parse_renames(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    pairs = []
    for item in text.split(","):
        old, arrow, new = item.strip().partition("->")
        if not arrow or not old:
            raise ValueError(f"bad rename {item.strip()!r}: expected Old->New")
        pairs.append((old.strip(), new.strip()))
    return tuple(pairs)


def find_copies(files: list[Path]) -> list[Copy]:
    copies = []
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if match := MARKER.match(line):
                copies.append(Copy(file, number, match["target"], _parse_renames(match["renames"])))
    return copies


def resolve_source(target: str, root: Path) -> tuple[Path, list[str]] | None:
    """(module file, attribute path) for the longest dotted prefix of `target` that names a .py file under root."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        candidate = root.joinpath(*parts[:split]).with_suffix(".py")
        if candidate.is_file():
            return candidate, parts[split:]
    return None


def _find_object(body: list[ast.stmt], path: list[str]) -> ast.stmt | None:
    for node in body:
        if _defined_name(node) == path[0]:
            if len(path) == 1:
                return node
            return _find_object(getattr(node, "body", []), path[1:]) if isinstance(node, ast.ClassDef) else None
    return None


def check_copy(copy: Copy, root: Path) -> str | None:
    """None when the copy matches; else a message naming the file, the line and what differs."""
    where = f"{copy.file.relative_to(root)}:{copy.line}"
    resolved = resolve_source(copy.target, root)
    if resolved is None:
        return f"{where}: source {copy.target!r} names no module under {root}"
    source_file, path = resolved
    source_lines = source_file.read_text(encoding="utf-8").splitlines(keepends=True)
    source_node = _find_object(ast.parse("".join(source_lines)).body, path)
    if source_node is None:
        return f"{where}: {'.'.join(path)!r} is not defined in {source_file.relative_to(root)}"
    copy_lines = copy.file.read_text(encoding="utf-8").splitlines(keepends=True)
    below = next((n for n in range(copy.line, len(copy_lines)) if copy_lines[n].strip()), None)
    copy_node = next(
        (n for n in _statements(ast.parse("".join(copy_lines))) if below is not None and _first_line(n) == below + 1),
        None,
    )
    if copy_node is None:
        return f"{where}: the marker is not followed by a def, class or assignment"
    expected = _segment(source_lines, source_node)
    for old, new in copy.renames:
        expected = expected.replace(old, new)
    actual = _segment(copy_lines, copy_node)
    if actual == expected:
        return None
    for offset, (want, got) in enumerate(zip(expected.splitlines(), actual.splitlines(), strict=False)):
        if want != got:
            return (
                f"{copy.file.relative_to(root)}:{_first_line(copy_node) + offset}: differs from {copy.target}\n"
                f"  source: {want.strip()}\n  copy:   {got.strip()}"
            )
    return f"{where}: differs from {copy.target} in length ({len(actual.splitlines())} vs {len(expected.splitlines())} lines)"


def library_files(root: Path) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [root / name for name in listed if not name.startswith("tests/") and (root / name).is_file()]


def test_marked_copies_match_their_source():
    copies = find_copies(library_files(ROOT))
    targets = {c.target for c in copies}
    # the known copies are found (an edit that drops a marker would silently stop the check)
    assert {
        "modeling_dig.modeling_dig.eager_attention_forward",
        "processing.charsets.CHARSET_94",
        "processing.charsets.CHARSET_36",
        "processing.charsets.CharsetAdapter",
        "modeling_dig.original_checkpoint.weights_only_failure",
    } <= targets
    problems = [message for c in copies if (message := check_copy(c, ROOT)) is not None]
    assert not problems, "copies drifted from their source:\n" + "\n".join(problems)


def _tree(tmp_path: Path, copy_body: str, marker: str = "# Copied from pkg.source.Greeter") -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "source.py").write_text(
        "import os\n\n\nclass Greeter:\n    def greet(self, name: str) -> str:\n        return 'hi ' + name\n"
    )
    (tmp_path / "pkg" / "copy.py").write_text(f"import sys\n\n\n{marker}\n{copy_body}")
    return tmp_path / "pkg" / "copy.py"


def test_checker_names_file_and_line_of_a_drifted_copy(tmp_path):
    copy_file = _tree(
        tmp_path, "class Greeter:\n    def greet(self, name: str) -> str:\n        return 'hello ' + name\n"
    )
    (copy,) = find_copies([copy_file])
    message = check_copy(copy, tmp_path)
    assert message is not None and message.startswith("pkg/copy.py:7: differs from pkg.source.Greeter")
    assert "return 'hello ' + name" in message


def test_checker_applies_renames_and_accepts_an_exact_copy(tmp_path):
    body = "class Welcomer:\n    def greet(self, name: str) -> str:\n        return 'hi ' + name\n"
    copy_file = _tree(tmp_path, body, marker="# Copied from pkg.source.Greeter with Greeter->Welcomer")
    (copy,) = find_copies([copy_file])
    assert copy.renames == (("Greeter", "Welcomer"),)
    assert check_copy(copy, tmp_path) is None
    copy_file.write_text(copy_file.read_text().replace("class Welcomer", "class Greeter"))  # declared, not applied
    assert check_copy(find_copies([copy_file])[0], tmp_path) is not None


def test_checker_reports_a_missing_source(tmp_path):
    copy_file = _tree(tmp_path, "def f():\n    pass\n", marker="# Copied from pkg.source.Missing")
    assert "'Missing' is not defined in pkg/source.py" in check_copy(find_copies([copy_file])[0], tmp_path)
