"""txt2img as a service: a request in, a `Processed` out, through the one generation pipeline
(`webui.processing`). The UI and the API submit `Txt2ImgRequest`s to the job queue."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from PIL import Image

from webui.processing.checks import MAX_SIDE, MAX_STEPS, hires_target
from webui.processing.context import GenerationResult, Processed
from webui.processing.errors import GenerationError
from webui.processing.pipeline import Pipeline
from webui.processing.prompts_stage import random_seed
from webui.processing.requests import Txt2ImgRequest
from webui.prompts.styles import StyleDatabase
from webui.scripts.builtin import builtin_catalog
from webui.services.jobs import JobState
from webui.services.model_service import ModelService
from webui.settings import Settings
from webui.version import VERSION

__all__ = ["Txt2ImgService", "GenerationError", "GenerationResult", "Processed", "random_seed", "hires_target",
           "MAX_SIDE", "MAX_STEPS", "VERSION"]


class Txt2ImgService:
    mode = "txt2img"

    def __init__(self, models: ModelService, settings: Settings, outputs_dir: Path,
                 styles: StyleDatabase | None = None,
                 upscale: Callable[[Image.Image, str, float], Image.Image] | None = None,
                 upscaler_names: Callable[[], list[str]] | None = None,
                 pipeline: Pipeline | None = None) -> None:
        self.pipeline = pipeline or Pipeline(models, settings, outputs_dir, styles, upscale, upscaler_names,
                                             builtin_catalog(upscale, upscaler_names))
        self.models = models
        self.settings = settings
        self.outputs_dir = outputs_dir
        self.styles = styles

    def validate(self, req: Txt2ImgRequest) -> None:
        self.pipeline.validate(req)

    def image_upscalers(self) -> list[str]:
        return self.pipeline.image_upscalers()

    def run(self, req: Txt2ImgRequest, state: JobState, *, save: bool) -> Processed:
        return self.pipeline.run(req, state, save=save)
