"""Prompt templates for training (A1111's ``textual_inversion_templates/``).

A template is a text file, one prompt per line; each training sample takes a random line and
replaces ``[name]`` with the embedding's (or hypernetwork's) name and ``[filewords]`` with the
image's caption.  The six A1111 templates ship in the repository's ``textual_inversion_templates/``;
users add their own in ``<data-dir>/textual_inversion_templates/`` (searched recursively, as A1111
does), and a user file wins over a shipped one of the same name.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TEMPLATES_DIRNAME = "textual_inversion_templates"
REPO_TEMPLATES_DIR = Path(__file__).resolve().parents[2] / TEMPLATES_DIRNAME
DEFAULT_TEMPLATE = "style_filewords.txt"  # A1111's default in the Train tab


def template_dirs(data_dir: Path | None = None) -> list[Path]:
    """The folders searched, lowest priority first."""
    dirs = [REPO_TEMPLATES_DIR]
    if data_dir is not None:
        user = Path(data_dir) / TEMPLATES_DIRNAME
        if user.resolve() != REPO_TEMPLATES_DIR:  # data dir = repo root (the default install)
            dirs.append(user)
    return dirs


def list_templates(data_dir: Path | None = None) -> dict[str, Path]:
    """Template file name (as the dropdown and the API's ``template_filename`` name it) -> path,
    sorted by name; later folders (the data dir's) override earlier ones."""
    found: dict[str, Path] = {}
    for folder in template_dirs(data_dir):
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.txt")):
            if path.is_file():
                found[path.name] = path
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def find_template(filename: str, data_dir: Path | None = None) -> Path:
    """The path of template ``filename`` (a name from ``list_templates``); ``ValueError`` if unknown."""
    if not filename:
        raise ValueError("no prompt template selected")
    templates = list_templates(data_dir)
    name = Path(filename).name
    if name not in templates:
        raise ValueError(f"prompt template '{filename}' not found (known: {', '.join(templates) or 'none'})")
    return templates[name]


def fill_template(line: str, name: str, filewords: str) -> str:
    """Substitute ``[filewords]`` then ``[name]`` (A1111's order: a caption containing the literal
    text ``[name]`` is therefore replaced too)."""
    return line.replace("[filewords]", filewords).replace("[name]", name)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    path: Path
    lines: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> "PromptTemplate":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"cannot read prompt template {path}: {e.strerror or e}") from None
        lines = tuple(s for s in (raw.strip() for raw in text.splitlines()) if s)
        if not lines:
            raise ValueError(f"prompt template {path} has no lines")
        return cls(path.name, path, lines)

    @property
    def uses_filewords(self) -> bool:
        return any("[filewords]" in line for line in self.lines)

    def pick(self, rng: random.Random) -> str:
        return self.lines[rng.randrange(len(self.lines))]

    def render(self, rng: random.Random, name: str, filewords: str) -> str:
        """One sample's prompt: a random line with ``[name]`` and ``[filewords]`` filled in."""
        return fill_template(self.pick(rng), name, filewords)


def load_template(filename: str, data_dir: Path | None = None) -> PromptTemplate:
    """Load a template by its file name (searched as ``list_templates``) or by a path to a file."""
    p = Path(filename)
    if p.is_absolute() and p.is_file():
        return PromptTemplate.load(p)
    return PromptTemplate.load(find_template(filename, data_dir))
