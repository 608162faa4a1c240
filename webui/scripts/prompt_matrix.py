"""A1111's "Prompt matrix": the prompt split on `|`; the first part always, every combination of
the others on or off (2^n images), drawn as a grid with the parts labelled on its edges.

script_args: put_at_start, different_seeds, prompt_type ("positive"/"negative"),
variations_delimiter ("comma"/"space"), margin_size.
"""
from __future__ import annotations

import math
from typing import Any

from webui.imaging.grid_annotations import draw_prompt_matrix, image_grid, style_from_options
from webui.processing import checks, output_stage
from webui.processing.context import Processed
from webui.processing.errors import GenerationError
from webui.processing.pipeline import process_images
from webui.processing.prompts_stage import fixed_seed
from webui.processing.scripts import ArgInfo, Script
from webui.scripts.prompt_lines import prompt_matrix_combinations

MAX_PARTS = 12  # 2^11 images already


class PromptMatrix(Script):
    args = [ArgInfo("Put variable parts at start of prompt", False, kind="checkbox"),
            ArgInfo("Use different seed for each picture", False, kind="checkbox"),
            ArgInfo("Select prompt", "positive", choices=["positive", "negative"], kind="radio"),
            ArgInfo("Select joining char", "comma", choices=["comma", "space"], kind="radio"),
            ArgInfo("Grid margins (px)", 0, 0, 500, 2, kind="slider")]

    def title(self) -> str:
        return "Prompt matrix"

    def run(self, p: Any, put_at_start: Any = False, different_seeds: Any = False, prompt_type: Any = "positive",
            delimiter: Any = "comma", margin_size: Any = 0, *_: Any) -> Processed:
        if prompt_type not in ("positive", "negative"):
            raise GenerationError(f"Prompt matrix: prompt type must be 'positive' or 'negative', got {prompt_type!r}")
        if delimiter not in ("comma", "space"):
            raise GenerationError(f"Prompt matrix: joining char must be 'comma' or 'space', got {delimiter!r}")
        p.seed = fixed_seed(p.seed if not isinstance(p.seed, list) else p.seed[0])
        source = p.prompt if prompt_type == "positive" else p.negative_prompt
        source = source[0] if isinstance(source, list) else source
        parts = str(source).split("|")
        if len(parts) > MAX_PARTS:
            raise GenerationError(f"Prompt matrix: {len(parts) - 1} variable parts make too many images "
                                  f"(at most {MAX_PARTS - 1})")
        prompts = prompt_matrix_combinations(str(source), bool(put_at_start), str(delimiter))
        size = p.sd_model_default_size()
        checks.check_pixels(p, len(prompts), p.width or size, p.height or size, "the prompt matrix")
        p.n_iter = math.ceil(len(prompts) / p.batch_size)
        if prompt_type == "positive":
            p.prompt = prompts
        else:
            p.negative_prompt = prompts
        p.seed = [int(p.seed) + (i if different_seeds else 0) for i in range(len(prompts))]
        keep_grid = not p.do_not_save_grid
        p.do_not_save_grid = True  # the pipeline's plain grid is replaced by the labelled one
        res = process_images(p)
        if not res.images:
            return res
        w, h = res.images[0].size
        grid = image_grid(res.images, rows=1 << ((len(parts) - 1) // 2), batch_size=p.batch_size)
        grid = draw_prompt_matrix(grid, w, h, parts, int(margin_size or 0), font_size=max(10, (w + h) // 25),
                                  **style_from_options(p.opt))
        res.grids, res.grid_infotexts = [grid], [res.infotexts[0]]
        res.info["index_of_first_image"] = 1
        if keep_grid and p.opt("grid_save"):
            res.grid_path = output_stage.save(p, grid, res.infotexts[0], res.seed, grid=True)
        return res
