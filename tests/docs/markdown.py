"""The shell commands and Python snippets of README.md and docs/*.md, as a reader sees them.

A fenced ```` ```bash ```` block holds commands: a line ending in ``\\`` continues on the
next, ``#`` starts a comment, a line that is only a comment is no command. A fenced
```` ```python ```` block is one snippet. What a command needs beyond a CPU and this
repository is written in the Markdown (see ``tests/docs/test_commands.py``):

* ``# needs: gpu`` (or several: ``# needs: gpu, data``) at the end of a command, or as a
  line of a Python snippet, marks that command or snippet;
* ``<!-- needs: cluster -->`` on the last non-blank line before a fence marks every command
  of the block; ``<!-- covered-by: tests/analysis/test_notebooks.py -->`` there says that
  another test runs the block's commands in full.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What a marked command needs. Marked commands are checked, not run (data: run when the
# benchmark data is there).
NEEDS = {
    "gpu": "a CUDA GPU",
    "cluster": "several nodes or a SLURM cluster",
    "network": "a download or an online account (wandb)",
    "data": "the benchmark data (MACELAB_DATA, or a download)",
    "long": "minutes to hours of compute (or the whole test suite)",
}
LINE_MARK = re.compile(r"#\s*needs:\s*(?P<needs>[a-z]+(?:\s*,\s*[a-z]+)*)\s*$")
BLOCK_MARK = re.compile(r"^<!--\s*(?P<key>needs|covered-by):\s*(?P<value>.+?)\s*-->$")
FENCE = re.compile(r"^```(?P<language>[\w-]*)\s*$")
LANGUAGES = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python"}


@dataclass(frozen=True)
class Command:
    """One command (``language == "bash"``) or snippet (``"python"``) of a Markdown file."""

    path: Path  # relative to the repository
    line: int  # 1-based line of its first line in the file
    language: str
    text: str  # continuations joined, comments kept
    needs: frozenset[str] = field(default_factory=frozenset)
    covered_by: str | None = None

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def runs(self) -> bool:
        """Whether the command test runs it (else it is only checked)."""
        return not self.needs and self.covered_by is None

    def argv(self) -> list[str]:
        """The command's words as the shell splits them (comments dropped)."""
        return shlex.split(self.text, comments=True)


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md and docs/*.md, relative to ``root``."""
    return [Path("README.md"), *sorted(p.relative_to(root) for p in (root / "docs").glob("*.md"))]


def commands(path: Path, root: Path = ROOT) -> list[Command]:
    """Every command and snippet of ``path`` (relative to ``root``), in file order."""
    lines = (root / path).read_text(encoding="utf-8").splitlines()
    found: list[Command] = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        start, language = index, LANGUAGES.get(fence.group("language"))
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if language is not None:
            block = lines[start + 1 : end]
            needs, covered_by = _block_marks(lines, start)
            if language == "python":
                found.append(_snippet(path, start + 2, block, needs, covered_by))
            else:
                found.extend(_shell_commands(path, start + 2, block, needs, covered_by))
        index = end + 1
    return found


def all_commands(root: Path = ROOT) -> list[Command]:
    return [command for path in markdown_files(root) for command in commands(path, root)]


def _block_marks(lines: list[str], fence: int) -> tuple[frozenset[str], str | None]:
    """The ``<!-- needs: ... -->`` / ``<!-- covered-by: ... -->`` lines just above a fence."""
    needs: set[str] = set()
    covered_by = None
    index = fence - 1
    while index >= 0 and lines[index].strip():
        mark = BLOCK_MARK.match(lines[index].strip())
        if not mark:
            break
        if mark.group("key") == "needs":
            needs |= _needs(mark.group("value"), f"line {index + 1}")
        else:
            covered_by = mark.group("value")
        index -= 1
    return frozenset(needs), covered_by


def _needs(text: str, where: str) -> set[str]:
    needs = {word.strip() for word in text.split(",") if word.strip()}
    unknown = needs - set(NEEDS)
    if unknown:
        raise ValueError(f"{where}: unknown needs {sorted(unknown)}; known: {sorted(NEEDS)}")
    return needs


def _snippet(
    path: Path, line: int, block: list[str], needs: frozenset[str], covered_by: str | None
) -> Command:
    marked = set(needs)
    for offset, text in enumerate(block):
        mark = LINE_MARK.search(text)
        if mark and text.strip().startswith("#"):
            marked |= _needs(mark.group("needs"), f"{path}:{line + offset}")
    return Command(path, line, "python", "\n".join(block), frozenset(marked), covered_by)


def _shell_commands(
    path: Path, line: int, block: list[str], needs: frozenset[str], covered_by: str | None
) -> list[Command]:
    found = []
    index = 0
    while index < len(block):
        first = index
        parts = [block[index]]
        while parts[-1].rstrip().endswith("\\") and index + 1 < len(block):
            parts[-1] = parts[-1].rstrip()[:-1]
            index += 1
            parts.append(block[index])
        index += 1
        text = " ".join(part.strip() for part in parts).strip()
        if not text or text.startswith("#"):
            continue
        marked = set(needs)
        mark = LINE_MARK.search(text)
        if mark:
            marked |= _needs(mark.group("needs"), f"{path}:{line + first}")
        found.append(Command(path, line + first, "bash", text, frozenset(marked), covered_by))
    return found
