"""The training image folder, read as A1111's Train tab reads it, and a reproducible batch iterator.

Rules (A1111's): the folder is not searched recursively; files that do not open as images are
skipped; an image's caption is the same-named ``.txt`` file, else its file name without extension
and without leading digits/dashes (``^[-\\d]+\\s*``), optionally reduced to the matches of the
``dataset_filename_word_regex`` option joined with ``dataset_filename_join_string``.  Images are
resized (bicubic, aspect not kept) to the training size, or with "do not resize" kept at their own
size (cropped to a multiple of 8) and batched by size bucket.  "PNG alpha as loss weight" turns the
alpha channel into a per-latent-pixel weight map (minimum 0, mean 1).  Latent sampling: ``once`` =
one VAE posterior sample drawn at load, ``deterministic`` = the posterior mean, ``random`` = a new
sample each time the image is used.

Departures, each for a reason: EXIF orientation is applied (the trainer sees the photo as viewers
show it); a palette image's transparent colour counts as alpha; an all-opaque alpha gives weight 1
(A1111 divides by zero there); files are read in name order so runs are reproducible.

The VAE is a callable, ``encode(pixels[1, 3, H, W] in -1..1) -> posterior``: a diffusers
``AutoencoderKL.encode`` (its output's ``latent_dist``), anything with ``mean`` and ``std``, or a
plain latent tensor (then every method is ``once``).  Nothing here knows the model family.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from webui.training.templates import PromptTemplate

log = logging.getLogger(__name__)

RE_NUMBERS_AT_START = re.compile(r"^[-\d]+\s*")
LATENT_SAMPLING_METHODS = ("once", "deterministic", "random")
# kinds of derived random streams, so that no two uses of one seed draw the same numbers
_ONCE, _PLAN, _PROMPT, _NOISE = 1, 2, 3, 4


class DatasetLoadInterrupted(RuntimeError):
    """Loading was stopped by the ``should_stop`` callback (the user pressed Interrupt)."""


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream ``keys`` of run ``seed``: independent of every other stream and
    computable for any position without replaying the ones before it (that is what makes resuming
    at step N draw what an uninterrupted run draws)."""
    ss = np.random.SeedSequence([seed % (1 << 64), *keys])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def caption_from_filename(stem: str, word_regex: str = "", join_string: str = " ") -> str:
    """A caption from a file name without extension: leading ``[-\\d]+\\s*`` removed, then, with
    ``word_regex``, only its matches joined by ``join_string``."""
    text = RE_NUMBERS_AT_START.sub("", stem)
    if word_regex:
        text = (join_string or "").join(_compile_word_regex(word_regex).findall(text))
    return text


def _compile_word_regex(word_regex: str) -> re.Pattern[str]:
    try:
        return re.compile(word_regex)
    except re.error as e:
        raise ValueError(f"dataset_filename_word_regex '{word_regex}' is not a valid regular expression: {e}") from None


def build_prompt(template: PromptTemplate | None, rng: random.Random, name: str, caption: str,
                 shuffle_tags: bool = False, tag_drop_out: float = 0.0) -> str:
    """One sample's prompt: tags (the caption split on ',') dropped with probability ``tag_drop_out``
    and shuffled when asked, then a random template line filled with ``name`` and the tags."""
    words = caption
    if shuffle_tags or tag_drop_out:
        tags = [t.strip() for t in caption.split(",")]
        if tag_drop_out:
            tags = [t for t in tags if rng.random() >= tag_drop_out]
        if shuffle_tags:
            rng.shuffle(tags)
        words = ", ".join(t for t in tags if t)
    return template.render(rng, name, words) if template is not None else words


def alpha_weight_map(alpha: Image.Image, latent_hw: tuple[int, int]) -> torch.Tensor:
    """Loss weights [1, h, w] from an alpha channel: resized to the latent grid, shifted to a minimum
    of 0 and scaled to a mean of 1 (so the loss stays comparable to an unweighted one)."""
    h, w = latent_hw
    a = np.asarray(alpha.resize((w, h), Image.BICUBIC), dtype=np.float32).copy()
    a -= a.min()
    mean = float(a.mean())
    if mean <= 0:  # uniform alpha: nothing to weight
        return torch.ones(1, h, w)
    return torch.from_numpy(a / mean)[None]


def _posterior_parts(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    out = getattr(out, "latent_dist", out)
    if isinstance(out, torch.Tensor):
        return out, None
    if hasattr(out, "mean") and hasattr(out, "std"):
        return out.mean, out.std
    raise TypeError(f"encode() returned {type(out).__name__}; expected a posterior with mean/std or a tensor")


@dataclass
class DatasetEntry:
    path: Path
    caption: str
    size: tuple[int, int]  # (width, height) in pixels as encoded: the size bucket
    latent: torch.Tensor | None = None  # [C, h, w], scaled; once / deterministic
    mean: torch.Tensor | None = None  # random: scaled posterior mean and std
    std: torch.Tensor | None = None
    weight: torch.Tensor | None = None  # [1, h, w] with "PNG alpha as loss weight"


class TrainingDataset:
    """The images of ``data_root`` encoded to latents (on the CPU), with captions and size buckets."""

    def __init__(self, data_root: str | Path, encode: Callable[[torch.Tensor], Any], *, width: int = 512,
                 height: int = 512, varsize: bool = False, use_weight: bool = False,
                 latent_sampling_method: str = "once", latent_scale: float = 1.0, latent_shift: float = 0.0,
                 seed: int = 0, word_regex: str = "", join_string: str = " ",
                 should_stop: Callable[[], bool] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        if latent_sampling_method not in LATENT_SAMPLING_METHODS:
            raise ValueError(f"latent sampling method '{latent_sampling_method}' is not one of "
                             f"{', '.join(LATENT_SAMPLING_METHODS)}")
        if not varsize and (width < 8 or height < 8 or width % 8 or height % 8):
            raise ValueError(f"training size {width}x{height} must be positive multiples of 8")
        if word_regex:
            _compile_word_regex(word_regex)  # fail before the slow part
        root = Path(data_root) if data_root else None
        if root is None or not str(data_root).strip():
            raise ValueError("dataset directory is not set")
        if not root.is_dir():
            raise ValueError(f"dataset directory {root} does not exist")
        self.root, self.use_weight, self.seed = root, use_weight, seed
        self.width, self.height, self.varsize = width, height, varsize
        self.entries: list[DatasetEntry] = []
        self.buckets: dict[tuple[int, int], list[int]] = {}
        method = latent_sampling_method
        files = sorted((p for p in root.iterdir() if p.is_file()), key=lambda p: p.name)
        log.info("Preparing dataset from %s (%d files)", root, len(files))
        for n, path in enumerate(files):
            if should_stop is not None and should_stop():
                raise DatasetLoadInterrupted("interrupted while preparing the dataset")
            if progress is not None:
                progress(n, len(files))
            loaded = self._load_image(path)
            if loaded is None:
                continue
            rgb, alpha = loaded
            caption = self._caption(path, word_regex, join_string)
            pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
            with torch.no_grad():
                mean, std = _posterior_parts(encode(pixels))
            mean = ((mean.float() - latent_shift) * latent_scale)[0].cpu()
            std = None if std is None else (std.float() * latent_scale)[0].cpu()
            if std is None:  # not a distribution: there is only one latent (A1111 does the same)
                method = "once"
            entry = DatasetEntry(path, caption, rgb.size)
            if method == "random":
                entry.mean, entry.std = mean, std
            elif method == "deterministic":
                entry.latent = mean
            else:
                gen = torch.Generator().manual_seed(derive_seed(seed, _ONCE, len(self.entries)))
                entry.latent = mean if std is None else mean + std * torch.randn(mean.shape, generator=gen)
            if use_weight:
                hw = (mean.shape[1], mean.shape[2])
                entry.weight = alpha_weight_map(alpha, hw) if alpha is not None else torch.ones(1, *hw)
            self.buckets.setdefault(entry.size, []).append(len(self.entries))
            self.entries.append(entry)
        if not self.entries:
            raise ValueError(f"dataset directory {root} has no images")
        self.latent_sampling_method = method
        if len(self.buckets) > 1:
            log.info("Size buckets: %s", ", ".join(f"{w}x{h}: {len(ix)}" for (w, h), ix in sorted(self.buckets.items())))

    def _load_image(self, path: Path) -> tuple[Image.Image, Image.Image | None] | None:
        try:
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                has_alpha = "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info)
                alpha = im.convert("RGBA").getchannel("A") if self.use_weight and has_alpha else None
                rgb = im.convert("RGB")
        except Exception:  # noqa: BLE001 - anything that does not open as an image is skipped, as in A1111
            return None
        if self.varsize:
            w, h = rgb.width - rgb.width % 8, rgb.height - rgb.height % 8
            if w < 8 or h < 8:
                log.warning("skipping %s: smaller than 8 pixels", path.name)
                return None
            box = ((rgb.width - w) // 2, (rgb.height - h) // 2)
            box4 = (box[0], box[1], box[0] + w, box[1] + h)
            rgb = rgb.crop(box4)
            alpha = alpha.crop(box4) if alpha is not None else None
        else:
            rgb = rgb.resize((self.width, self.height), Image.BICUBIC)
        return rgb, alpha

    @staticmethod
    def _caption(path: Path, word_regex: str, join_string: str) -> str:
        txt = path.with_suffix(".txt")
        if txt.is_file():
            return txt.read_text(encoding="utf-8", errors="replace").strip()
        return caption_from_filename(path.stem, word_regex, join_string)

    def __len__(self) -> int:
        return len(self.entries)

    def latent(self, i: int, gen: torch.Generator | None = None) -> torch.Tensor:
        """Entry ``i``'s latent; with ``random`` sampling a fresh posterior sample from ``gen``."""
        e = self.entries[i]
        if e.latent is not None:
            return e.latent
        assert e.mean is not None and e.std is not None
        return e.mean + e.std * torch.randn(e.mean.shape, generator=gen)

    def tag_frequency(self) -> dict[str, int]:
        """How many captions carry each ','-separated tag (kohya's ``ss_tag_frequency`` per folder)."""
        counts: Counter[str] = Counter()
        for e in self.entries:
            counts.update({t.strip() for t in e.caption.split(",") if t.strip()})
        return dict(counts.most_common())


@dataclass
class Batch:
    latents: torch.Tensor  # [B, C, h, w]
    weights: torch.Tensor | None  # [B, C, h, w] loss weights, or None
    prompts: list[str]
    captions: list[str]
    paths: list[Path]
    epoch: int
    epoch_step: int  # index of this batch within its epoch
    position: int  # batches drawn before this one in the run


class BatchIterator:
    """Endless batches over a dataset, a pure function of (seed, position).

    Epoch ``e`` is a shuffle of every image ``repeats`` times, cut into batches of one size bucket
    each; its length is ``len(dataset) * repeats // batch_size`` batches (A1111's), rounded down to a
    multiple of ``gradient_step``.  The order of epoch ``e`` and the prompts, tag shuffles and latent
    samples of each batch come from seeds derived from (seed, e, index), so the whole state is
    ``state_dict()`` = seed and position: restoring it (or ``seek_step(N)``) yields the batches an
    uninterrupted run would draw from there on."""

    def __init__(self, dataset: TrainingDataset, *, batch_size: int = 1, gradient_step: int = 1, seed: int = 0,
                 repeats: int = 1, template: PromptTemplate | None = None, name: str = "",
                 shuffle_tags: bool = False, tag_drop_out: float = 0.0) -> None:
        if batch_size < 1 or gradient_step < 1 or repeats < 1:
            raise ValueError("batch size, gradient accumulation steps and repeats must be positive")
        if not 0.0 <= tag_drop_out <= 1.0:
            raise ValueError(f"tag dropout must be between 0 and 1, not {tag_drop_out}")
        self.dataset, self.seed, self.repeats = dataset, seed, repeats
        self.template, self.name = template, name
        self.shuffle_tags, self.tag_drop_out = shuffle_tags, tag_drop_out
        self.batch_size = min(batch_size, len(dataset))
        self._raw_batches = len(dataset) * repeats // self.batch_size
        self.gradient_step = min(gradient_step, self._raw_batches)
        self.batches_per_epoch = self._raw_batches - self._raw_batches % self.gradient_step
        self.steps_per_epoch = self.batches_per_epoch // self.gradient_step  # optimizer steps
        self.position = 0
        self._plan: tuple[int, list[list[int]]] | None = None

    # ---- state
    @property
    def epoch(self) -> int:
        return self.position // self.batches_per_epoch

    @property
    def epoch_step(self) -> int:
        return self.position % self.batches_per_epoch

    def seek(self, position: int) -> None:
        if position < 0:
            raise ValueError(f"position must be >= 0, not {position}")
        self.position = position

    def seek_step(self, step: int) -> None:
        """Position the iterator after ``step`` optimizer steps (``step * gradient_step`` batches)."""
        self.seek(step * self.gradient_step)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "position": self.position, "batch_size": self.batch_size,
                "gradient_step": self.gradient_step, "batches_per_epoch": self.batches_per_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key in ("batch_size", "gradient_step", "batches_per_epoch"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"saved training state has {key} {state[key]}, this run {getattr(self, key)}: "
                                 "the dataset or batch settings changed, so the run cannot continue identically")
        self.seed = int(state["seed"])
        self.seek(int(state["position"]))

    # ---- drawing
    def epoch_plan(self, epoch: int) -> list[list[int]]:
        """The batches (lists of entry indices) of ``epoch``, in order."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        rng = random.Random(derive_seed(self.seed, _PLAN, epoch))
        b = self.batch_size
        batches: list[list[int]] = []
        leftovers: list[tuple[list[int], list[int]]] = []  # (leftover items, the whole bucket)
        for key in sorted(self.dataset.buckets):
            items = self.dataset.buckets[key] * self.repeats
            rng.shuffle(items)
            full = len(items) - len(items) % b
            batches.extend(items[i:i + b] for i in range(0, full, b))
            if full < len(items):
                leftovers.append((items[full:], items))
        # A bucket's remainder is topped up from the same bucket (its images must stack) until the
        # epoch has A1111's number of batches; the fullest remainders go first.
        leftovers.sort(key=lambda lb: -len(lb[0]))
        for rest, bucket in leftovers[:self._raw_batches - len(batches)]:
            others = [i for i in bucket if i not in rest]
            need = b - len(rest)
            extra = rng.sample(others, need) if len(others) >= need else rng.choices(bucket, k=need)
            batches.append(rest + extra)
        rng.shuffle(batches)
        plan = batches[:self.batches_per_epoch]
        self._plan = (epoch, plan)
        return plan

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return self.next_batch()

    def next_batch(self) -> Batch:
        epoch, epoch_step = self.epoch, self.epoch_step
        idx = self.epoch_plan(epoch)[epoch_step]
        prompt_rng = random.Random(derive_seed(self.seed, _PROMPT, epoch, epoch_step))
        gen = torch.Generator().manual_seed(derive_seed(self.seed, _NOISE, epoch, epoch_step))
        entries = [self.dataset.entries[i] for i in idx]
        latents = torch.stack([self.dataset.latent(i, gen) for i in idx])
        weights = None
        if self.dataset.use_weight:
            weights = torch.stack([e.weight for e in entries]).expand_as(latents).contiguous()  # type: ignore[misc]
        prompts = [build_prompt(self.template, prompt_rng, self.name, e.caption, self.shuffle_tags,
                                self.tag_drop_out) for e in entries]
        batch = Batch(latents, weights, prompts, [e.caption for e in entries], [e.path for e in entries],
                      epoch, epoch_step, self.position)
        self.position += 1
        return batch
