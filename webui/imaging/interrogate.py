"""A1111's interrogation (POST /sdapi/v1/interrogate) from local model folders only.

"clip": a BLIP captioning model from `models/BLIP/<name>/` (transformers' `save_pretrained` layout:
config.json, weights, processor files) writes the caption; when `models/CLIP/<name>/` holds a CLIP model in
the same layout and `models/interrogate/*.txt` hold A1111's category lists (one phrase per line; an optional
`<category>.top` file gives how many to keep, default 1), the best-matching phrases of each category are
appended, as A1111 does.  "deepdanbooru": A1111's DeepDanbooru network is a custom architecture; a file in
`models/deepbooru` is reported, not run.  Nothing is ever downloaded: a missing model is an error that names
the folder to fill.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PIL import Image

log = logging.getLogger(__name__)

MODELS = ("clip", "deepdanbooru")


class InterrogateError(ValueError):
    """The request cannot be answered (unknown model, nothing installed): the message says what to do."""


@dataclass
class _Loaded:
    path: Path
    model: Any
    processor: Any


def _model_dir(folder: Path) -> Path | None:
    """The first sub-folder (or the folder itself) holding a transformers config.json."""
    if (folder / "config.json").is_file():
        return folder
    if folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if (sub / "config.json").is_file():
                return sub
    return None


# A1111's interrogate_* option defaults, for an Interrogator made without the app's settings
DEFAULTS: dict[str, Any] = {"interrogate_keep_models_in_memory": False, "interrogate_return_ranks": False,
                            "interrogate_clip_num_beams": 1, "interrogate_clip_min_length": 24,
                            "interrogate_clip_max_length": 48, "interrogate_clip_dict_limit": 1500,
                            "interrogate_clip_skip_categories": []}


class Interrogator:
    def __init__(self, models_dir: Path, device: str = "cpu", option: Callable[[str], Any] | None = None) -> None:
        self.models_dir = Path(models_dir)
        self.device = device
        self._option = option or DEFAULTS.get
        self._lock = threading.Lock()
        self._blip: _Loaded | None = None
        self._clip: _Loaded | None = None

    @property
    def blip_dir(self) -> Path:
        return self.models_dir / "BLIP"

    @property
    def clip_dir(self) -> Path:
        return self.models_dir / "CLIP"

    @property
    def categories_dir(self) -> Path:
        return self.models_dir / "interrogate"

    @property
    def deepbooru_dir(self) -> Path:
        return self.models_dir / "deepbooru"

    def interrogate(self, image: Image.Image, model: str = "clip") -> str:
        if model not in MODELS:
            raise InterrogateError(f"unknown interrogation model {model!r}; choose one of {list(MODELS)}")
        if model == "deepdanbooru":
            return self._deepbooru()
        with self._lock:
            try:
                caption = self._caption(image.convert("RGB"))
                tags = self._rank(image.convert("RGB"))
            finally:
                self._unload()
        return ", ".join([caption, *tags]) if tags else caption

    def opt(self, key: str) -> Any:
        value = self._option(key)
        return DEFAULTS[key] if value is None else value

    def _unload(self) -> None:
        """A1111's interrogate_keep_models_in_memory off: the models go back to RAM after each use."""
        if self.opt("interrogate_keep_models_in_memory") or self.device == "cpu":
            return
        for loaded in (self._blip, self._clip):
            if loaded is not None:
                loaded.model.to("cpu")

    def _on_device(self, loaded: _Loaded) -> _Loaded:
        loaded.model.to(self.device)
        return loaded

    # ------------------------------------------------------------ BLIP caption
    def _load_blip(self) -> _Loaded:
        where = _model_dir(self.blip_dir)
        if where is None:
            raise InterrogateError(f"no BLIP captioning model: put one in transformers' folder layout "
                                   f"(config.json, weights, processor files) into {self.blip_dir}")
        if self._blip is None or self._blip.path != where:
            from transformers import BlipForConditionalGeneration, BlipProcessor

            try:
                processor = BlipProcessor.from_pretrained(where, local_files_only=True)
                model = BlipForConditionalGeneration.from_pretrained(where, local_files_only=True)
            except Exception as e:  # a half-copied folder: say which one
                raise InterrogateError(f"{where} is not a loadable BLIP model: {e}") from None
            self._blip = _Loaded(where, model.eval(), processor)
        return self._on_device(self._blip)

    def _caption(self, image: Image.Image) -> str:
        import torch

        blip = self._load_blip()
        inputs = blip.processor(images=image, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            # A1111's interrogate_clip_num_beams / _min_length / _max_length options
            out = blip.model.generate(**inputs, num_beams=int(self.opt("interrogate_clip_num_beams")),
                                      min_length=int(self.opt("interrogate_clip_min_length")),
                                      max_length=int(self.opt("interrogate_clip_max_length")))
        return blip.processor.decode(out[0], skip_special_tokens=True).strip()

    # ------------------------------------------------------------ CLIP ranking
    def category_names(self) -> list[str]:
        """The category files' names (the choices of interrogate_clip_skip_categories)."""
        return sorted(f.stem for f in self.categories_dir.glob("*.txt")) if self.categories_dir.is_dir() else []

    def _categories(self) -> list[tuple[str, list[str], int]]:
        out = []
        skip = set(self.opt("interrogate_clip_skip_categories") or ())
        limit = int(self.opt("interrogate_clip_dict_limit") or 0)  # 0 = every line (A1111)
        if self.categories_dir.is_dir():
            for f in sorted(self.categories_dir.glob("*.txt")):
                if f.stem in skip:
                    continue
                lines = [s.strip() for s in f.read_text(encoding="utf-8", errors="replace").splitlines() if s.strip()]
                if limit > 0:
                    lines = lines[:limit]
                top_file = f.with_suffix(".top")
                try:
                    top = int(top_file.read_text().strip()) if top_file.is_file() else 1
                except ValueError:
                    top = 1
                if lines:
                    out.append((f.stem, lines, max(1, top)))
        return out

    def _rank(self, image: Image.Image) -> list[str]:
        categories = self._categories()
        where = _model_dir(self.clip_dir)
        if where is None or not categories:
            return []  # the caption alone, as A1111 gives without its category files
        import torch

        if self._clip is None or self._clip.path != where:
            from transformers import CLIPModel, CLIPProcessor

            try:
                self._clip = _Loaded(where, CLIPModel.from_pretrained(where, local_files_only=True).eval(),
                                     CLIPProcessor.from_pretrained(where, local_files_only=True))
            except Exception as e:
                raise InterrogateError(f"{where} is not a loadable CLIP model: {e}") from None
        clip = self._on_device(self._clip)
        ranks = bool(self.opt("interrogate_return_ranks"))
        with torch.inference_mode():
            pixels = clip.processor(images=image, return_tensors="pt")["pixel_values"].to(self.device)
            img = clip.model.get_image_features(pixel_values=pixels)
            img = getattr(img, "pooler_output", img)
            img = img / img.norm(dim=-1, keepdim=True)
            tags: list[str] = []
            for _name, lines, top in categories:
                tok = clip.processor(text=lines, return_tensors="pt", padding=True, truncation=True).to(self.device)
                txt = clip.model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
                txt = getattr(txt, "pooler_output", txt)
                txt = txt / txt.norm(dim=-1, keepdim=True)
                # A1111's score: the softmax over the category of 100 x cosine similarity
                probs = (100.0 * img @ txt.T).softmax(dim=-1)[0]
                best = torch.topk(probs, min(top, len(lines)))
                for i, prob in zip(best.indices.tolist(), best.values.tolist()):
                    # interrogate_return_ranks: "(phrase:probability)", an attention weight in the prompt
                    tags.append(f"({lines[i]}:{prob:.3f})" if ranks else lines[i])
        return tags

    # ------------------------------------------------------------ DeepDanbooru
    def _deepbooru(self) -> str:
        files = sorted(p.name for p in self.deepbooru_dir.glob("*") if p.is_file()) \
            if self.deepbooru_dir.is_dir() else []
        if not files:
            raise InterrogateError(f"no DeepDanbooru model: put A1111's model-resnet_custom_v3.pt into "
                                   f"{self.deepbooru_dir}")
        raise InterrogateError(f"{self.deepbooru_dir} holds {', '.join(files)}, but running DeepDanbooru "
                               f"(A1111's custom network) is not supported yet; use model \"clip\"")
