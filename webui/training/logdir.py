"""A training run's log directory, laid out as A1111 lays it out:

    <log>/<YYYY-MM-DD>/<name>/
        embeddings/<name>-<step>.pt        (hypernetworks/ for hypernetworks; loras/ for our LoRAs)
        images/<name>-<step>.png           previews
        image_embeddings/<name>-<step>.png previews carrying the embedding (embeddings only)
        textual_inversion_loss.csv         (hypernetwork_loss.csv, lora_loss.csv)
        settings-<YYYY-MM-DD-HH-MM-SS>.json

The loss CSV has A1111's columns ``step,epoch,epoch_step,loss,learn_rate``; a row is written every
``training_write_csv_every`` optimizer steps (0: never), the header only when the file is new, so a
resumed run on the same day appends to the same file.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KINDS = {  # kind -> (snapshot folder, loss CSV file name)
    "embedding": ("embeddings", "textual_inversion_loss.csv"),
    "hypernetwork": ("hypernetworks", "hypernetwork_loss.csv"),
    "lora": ("loras", "lora_loss.csv"),
}
CSV_FIELDS = ("step", "epoch", "epoch_step", "loss", "learn_rate")


def _safe_name(name: str) -> str:
    # the name becomes a folder and file names: no separators or parent references
    clean = name.strip().replace("/", "_").replace("\\", "_")
    if not clean or clean in (".", ".."):
        raise ValueError(f"'{name}' cannot name a training run")
    return clean


@dataclass(frozen=True)
class TrainingLogDir:
    root: Path  # <log>/<date>/<name>
    name: str
    kind: str

    @classmethod
    def for_run(cls, log_directory: str | Path, name: str, kind: str,
                when: datetime.date | None = None) -> "TrainingLogDir":
        """The run's folder under ``log_directory`` for today (or ``when``); nothing is created yet."""
        if kind not in KINDS:
            raise ValueError(f"unknown training kind '{kind}' ({', '.join(KINDS)})")
        if not str(log_directory).strip():
            raise ValueError("log directory is not set")
        day = (when or datetime.date.today()).strftime("%Y-%m-%d")
        name = _safe_name(name)
        return cls(Path(log_directory) / day / name, name, kind)

    @property
    def snapshots_dir(self) -> Path:
        return self.root / KINDS[self.kind][0]

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def image_embeddings_dir(self) -> Path:
        return self.root / "image_embeddings"

    @property
    def loss_csv(self) -> Path:
        return self.root / KINDS[self.kind][1]

    def create(self, *, snapshots: bool = True, images: bool = True, image_embeddings: bool = False) -> None:
        """Make the run folder and the sub-folders this run will write (A1111 makes only those)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for wanted, folder in ((snapshots, self.snapshots_dir), (images, self.images_dir),
                               (image_embeddings, self.image_embeddings_dir)):
            if wanted:
                folder.mkdir(parents=True, exist_ok=True)

    def snapshot_path(self, step: int, suffix: str = ".pt") -> Path:
        return self.snapshots_dir / f"{self.name}-{step}{suffix}"

    def image_path(self, step: int, suffix: str = ".png") -> Path:
        return self.images_dir / f"{self.name}-{step}{suffix}"

    def image_embedding_path(self, step: int) -> Path:
        return self.image_embeddings_dir / f"{self.name}-{step}.png"

    def save_settings(self, settings: dict[str, Any], when: datetime.datetime | None = None) -> Path:
        """Write ``settings-<timestamp>.json``: a ``datetime`` field then the run's arguments (values
        JSON cannot hold are written as text)."""
        now = when or datetime.datetime.now()
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"settings-{now.strftime('%Y-%m-%d-%H-%M-%S')}.json"
        data = {"datetime": now.strftime("%Y-%m-%d %H:%M:%S"), **settings}
        path.write_text(json.dumps(data, indent=4, default=str), encoding="utf-8")
        return path

    def loss_writer(self, every: int) -> "LossCsvWriter":
        return LossCsvWriter(self.loss_csv, every)


class LossCsvWriter:
    """Appends ``step,epoch,epoch_step,loss,learn_rate`` rows every ``every`` optimizer steps."""

    def __init__(self, path: Path, every: int) -> None:
        if every < 0:
            raise ValueError(f"training_write_csv_every must be >= 0, not {every}")
        self.path, self.every = Path(path), every

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def write(self, step: int, steps_per_epoch: int, loss: float, learn_rate: float) -> bool:
        """Record optimizer step ``step`` (1-based: the number of steps done) if it is due; epoch and
        epoch_step are counted as A1111 counts them, from ``step - 1``.  Returns whether it wrote."""
        if not self.due(step):
            return False
        epoch_len = max(1, steps_per_epoch)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(CSV_FIELDS)
            w.writerow([step, (step - 1) // epoch_len, (step - 1) % epoch_len, f"{loss:.7f}", learn_rate])
        return True


@dataclass(frozen=True)
class LossRow:
    step: int
    epoch: int
    epoch_step: int
    loss: float
    learn_rate: float


def read_loss_csv(path: str | Path) -> list[LossRow]:
    """The rows of a loss CSV (ours or A1111's), in file order; a missing file gives no rows, and
    rows that do not parse (a line cut short by a crash) are skipped (a nan loss is kept: it says
    the run diverged)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows: list[LossRow] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        for rec in csv.DictReader(f):
            try:
                row = LossRow(int(rec["step"]), int(rec["epoch"]), int(rec["epoch_step"]),
                              float(rec["loss"]), float(rec["learn_rate"]))
            except (KeyError, TypeError, ValueError):
                continue
            rows.append(row)
    return rows
