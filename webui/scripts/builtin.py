"""The scripts that come with the app, in A1111's order, for each tab."""
from __future__ import annotations

from typing import Callable

from PIL import Image

from webui.processing.scripts import ScriptCatalog, ScriptRunner
from webui.scripts.controlnet import ControlNetScript
from webui.scripts.outpainting import OutpaintingMk2, PoorMansOutpainting
from webui.scripts.prompt_matrix import PromptMatrix
from webui.scripts.prompts_from_file import PromptsFromFile
from webui.scripts.xyz_plot import XYZPlot
from webui.scripts.sd_upscale import SdUpscale, pil_upscale

Upscale = Callable[[Image.Image, str, float], Image.Image]


def builtin_catalog(upscale: Upscale | None = None, upscaler_names: Callable[[], list[str]] | None = None
                    ) -> ScriptCatalog:
    up = upscale or pil_upscale
    names = upscaler_names or (lambda: ["None", "Lanczos", "Nearest"])

    def scripts(is_img2img: bool) -> ScriptRunner:
        # each tab has its own instances (scripts may keep per-tab state, as in A1111)
        runner = ScriptRunner(is_img2img)
        for s in (ControlNetScript(), PromptMatrix(), PromptsFromFile(), XYZPlot(), SdUpscale(up, names),
                  PoorMansOutpainting(), OutpaintingMk2()):
            runner.add(s)
        return runner

    return ScriptCatalog(scripts(False), scripts(True))
