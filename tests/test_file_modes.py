"""Files we write get the mode a plain write gives them (0666 minus the umask), never mkstemp's 0600."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

from tiny_models import make_tiny_checkpoint
from webui.fsutil import current_umask
from webui.hashes import HashCache
from webui.models.merge import MergeRecipe, merge_checkpoints
from webui.outputs import save_image
from webui.prompts.styles import PromptStyle, StyleDatabase
from webui.settings import Settings


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)  # unusual on purpose: the result must follow the umask, not a fixed 0644
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_current_umask_reads_without_changing(umask_027) -> None:
    assert current_umask() == 0o027
    assert current_umask() == 0o027


def test_written_files_follow_the_umask(tmp_path: Path, umask_027) -> None:
    s = Settings.load(tmp_path / "config.json")
    s.set("samples_format", "png")
    s.save()
    assert _mode(tmp_path / "config.json") == 0o640

    db = StyleDatabase(tmp_path / "styles.csv")
    db.styles["a"] = PromptStyle("a", "cat", "", str(db.path))
    db.save()
    assert _mode(tmp_path / "styles.csv") == 0o640

    HashCache(tmp_path / "cache" / "hashes.json").store(tmp_path / "styles.csv", "00" * 32)
    assert _mode(tmp_path / "cache" / "hashes.json") == 0o640

    img = save_image(Image.new("RGB", (8, 8)), tmp_path / "out", seed=1, infotext="x")
    assert _mode(img) == 0o640

    a = make_tiny_checkpoint(tmp_path / "a.safetensors", seed=1, dtype=torch.float32)
    out = merge_checkpoints(MergeRecipe(a, a, None, "Weighted sum", 0.5, output=tmp_path / "m.safetensors"))
    assert _mode(out) == 0o640
