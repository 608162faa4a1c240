"""img2img with its built-in scripts selectable by A1111's titles ("SD upscale", "Poor man's
outpainting", "Outpainting mk2"), for callers that bring their own upscalers. The scripts live in
`webui.scripts`; this only builds a pipeline whose catalog uses the given upscale function."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from PIL import Image

from webui.processing.context import Processed
from webui.processing.requests import Img2ImgRequest
from webui.scripts.builtin import builtin_catalog
from webui.scripts.outpainting import DIRECTIONS
from webui.scripts.sd_upscale import pil_upscale
from webui.services.img2img import Img2ImgService
from webui.services.jobs import JobState

Upscale = Callable[[Image.Image, str, float], Image.Image]
__all__ = ["Img2ImgScripts", "DIRECTIONS", "pil_upscale"]


class Img2ImgScripts:
    def __init__(self, img2img: Img2ImgService, upscale: Upscale = pil_upscale,
                 names: Callable[[], list[str]] = lambda: ["None", "Lanczos", "Nearest"]) -> None:
        self.svc = img2img
        self.names = names
        self.pipeline = replace(img2img.pipeline, scripts=builtin_catalog(upscale, names), upscale=upscale,
                                upscaler_names=names)

    def run(self, req: Img2ImgRequest, state: JobState, *, save: bool) -> Processed:
        return self.pipeline.run(req, state, save=save)

    def validate(self, req: Img2ImgRequest) -> Any:
        return self.pipeline.validate(req)
