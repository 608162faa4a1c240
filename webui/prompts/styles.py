"""Prompt styles kept in A1111's `styles.csv` (`name,prompt,negative_prompt`).

A style's text either holds `{prompt}`, which is replaced by the user's prompt, or is appended to it
with ", " (empty parts dropped). Styles apply in the order selected, each to the result of the last.
Files from A1111 load as they are: UTF-8 with or without BOM, quoted fields with commas and newlines,
the old `name,text` header, short rows, and `#` comment rows.
"""
from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, NamedTuple

from webui.fsutil import normal_mode

FIELDS = ("name", "prompt", "negative_prompt")


class PromptStyle(NamedTuple):
    name: str
    prompt: str
    negative_prompt: str
    path: str | None = None  # A1111 keeps the file a style came from; kept for extensions that read it


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """One style applied to one prompt (A1111's rule)."""
    if "{prompt}" in style_prompt:
        return style_prompt.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def apply_styles_to_prompt(prompt: str, styles: Iterable[str]) -> str:
    """Apply style texts (not names) in order."""
    for style in styles:
        prompt = merge_prompts(style, prompt)
    return prompt


class StyleDatabase:
    """The styles of one csv file. Loads on construction; a missing file is an empty database."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.no_style = PromptStyle("None", "", "", None)
        self.styles: dict[str, PromptStyle] = {}
        self.load()

    @property
    def backup_path(self) -> Path:
        return self.path.with_name(self.path.name + ".bak")

    def load(self) -> None:
        """(Re)read the file, replacing what is in memory."""
        self.styles = {}
        if not self.path.is_file():
            return
        with open(self.path, "r", encoding="utf-8-sig", newline="") as f:
            for row in csv.DictReader(f, skipinitialspace=True):
                name = row.get("name")
                if name is None or name.startswith("#"):
                    continue  # no name column, or a comment row (A1111 skips these too)
                # Old A1111 files call the prompt column `text`; short rows give None for missing cells.
                prompt = row.get("prompt") if "prompt" in row else row.get("text")
                self.styles[name] = PromptStyle(name, prompt or "", row.get("negative_prompt") or "", str(self.path))

    reload = load  # A1111's name

    def save(self) -> None:
        """Write all styles; the previous file is kept as `<name>.bak`, the new one lands atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            normal_mode(fd)  # styles.csv keeps the mode a plain write gives it
            # utf-8-sig as A1111 writes it, so Excel and A1111 read non-ASCII text correctly.
            with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=FIELDS)
                writer.writeheader()
                for style in self.styles.values():
                    writer.writerow({"name": style.name, "prompt": style.prompt or "",
                                     "negative_prompt": style.negative_prompt or ""})
            if self.path.exists():
                shutil.copy2(self.path, self.backup_path)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    save_styles = save  # A1111's name

    def get_style_prompts(self, style_names: Iterable[str]) -> list[str]:
        return [self.styles.get(n, self.no_style).prompt for n in style_names]

    def get_negative_style_prompts(self, style_names: Iterable[str]) -> list[str]:
        return [self.styles.get(n, self.no_style).negative_prompt for n in style_names]

    def apply_styles_to_prompt(self, prompt: str, style_names: Iterable[str]) -> str:
        """Unknown names apply nothing (A1111's `no_style`)."""
        return apply_styles_to_prompt(prompt, self.get_style_prompts(style_names))

    def apply_negative_styles_to_prompt(self, prompt: str, style_names: Iterable[str]) -> str:
        return apply_styles_to_prompt(prompt, self.get_negative_style_prompts(style_names))
