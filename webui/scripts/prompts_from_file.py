"""A1111's "Prompts from file or textbox": one job per line; a line is a prompt, or A1111's
`--prompt "..." --negative_prompt "..." --steps 10 --seed 5 ...` options for that job.

script_args: checkbox_iterate (Iterate seed every line), checkbox_iterate_batch (Use same random
seed for all lines), prompt_position ("start"/"end"), prompt_txt (the lines; the UI's file upload
fills it).
"""
from __future__ import annotations

import copy
from typing import Any

from webui.engine.samplers import UnknownSamplerError, resolve_sampler
from webui.processing import checks
from webui.processing.context import Processed
from webui.processing.errors import GenerationError
from webui.processing.pipeline import process_images
from webui.processing.scripts import ArgInfo, Script
from webui.scripts.prompt_lines import combine_prompt, line_seeds, parse_line

MAX_LINES = 1000


class PromptsFromFile(Script):
    args = [ArgInfo("Iterate seed every line", False, kind="checkbox"),
            ArgInfo("Use same random seed for all lines", False, kind="checkbox"),
            ArgInfo("Insert prompts at the", "start", choices=["start", "end"], kind="radio"),
            ArgInfo("List of prompt inputs", "", kind="textbox")]

    def title(self) -> str:
        return "Prompts from file or textbox"

    def run(self, p: Any, iterate: Any = False, same_seed: Any = False, position: Any = "start",
            text: Any = "", *_: Any) -> Processed:
        if position not in ("start", "end"):
            raise GenerationError(f"Prompts from file: position must be 'start' or 'end', got {position!r}")
        lines = [x for x in (raw.strip() for raw in str(text or "").splitlines()) if x]
        if not lines:
            raise GenerationError("Prompts from file: the list of prompt inputs is empty")
        if len(lines) > MAX_LINES:
            raise GenerationError(f"Prompts from file: {len(lines)} lines; at most {MAX_LINES}")
        jobs = []
        for number, line in enumerate(lines, 1):
            try:
                jobs.append(parse_line(line, sampler_resolver=_sampler, model_resolver=_model(p)))
            except ValueError as e:
                raise GenerationError(f"Prompts from file, line {number}: {e}") from None
        size = p.sd_model_default_size()
        total = 0
        for job in jobs:
            w, h = int(job.get("width", p.width or size)), int(job.get("height", p.height or size))
            total += int(job.get("batch_size", p.batch_size)) * int(job.get("n_iter", p.n_iter)) * w * h
        limit = checks.pixel_limit(p)
        if limit and total > limit:
            raise GenerationError(f"Prompts from file: the {len(jobs)} lines ask for {total} pixels in all; the option "
                                  f"generation_max_pixels allows {limit}")
        seeds = line_seeds(int(p.seed) if p.seed not in (None, "") else -1, len(jobs), bool(iterate), bool(same_seed),
                           p.batch_size, p.n_iter)
        state = p.state
        if state is not None:
            state.job_count = sum(int(j.get("n_iter", p.n_iter)) for j in jobs)
        images, texts, prompts, all_seeds, warnings = [], [], [], [], []
        paths = []
        info: dict[str, Any] = {}
        for job, seed in zip(jobs, seeds):
            if state is not None and state.interrupted:
                break
            pc = copy.copy(p)
            pc.styles, pc.override_settings = list(p.styles), dict(p.override_settings)
            pc.extra_generation_params, pc.warnings = dict(p.extra_generation_params), []
            pc.seed = seed
            for k, v in job.items():
                if k == "sd_model":
                    pc.override_settings["sd_model_checkpoint"] = v
                elif k in ("prompt", "negative_prompt"):
                    continue
                elif k == "styles":
                    pc.styles = [s.strip() for s in str(v).split(",") if s.strip()]
                elif k == "sampler_index":
                    pc.sampler_name = v
                elif k == "prompt_for_display":
                    continue
                else:
                    setattr(pc, k, v)
            pc.prompt = combine_prompt(p.prompt, job.get("prompt"), position)  # type: ignore[arg-type]
            pc.negative_prompt = combine_prompt(p.negative_prompt, job.get("negative_prompt"), position)  # type: ignore[arg-type]
            res = process_images(pc)
            images += res.images
            texts += res.infotexts
            paths += res.paths
            prompts += res.all_prompts
            all_seeds += res.all_seeds
            warnings += [w for w in pc.warnings if w not in warnings]
            info = info or dict(res.info)
        if not images:
            raise GenerationError("Prompts from file was interrupted before any image was made")
        info.update(all_prompts=prompts, all_seeds=all_seeds, infotexts=texts, index_of_first_image=0,
                    warnings=warnings)
        return Processed(images, texts, info, paths)


def _sampler(name: str) -> str | None:
    try:
        return resolve_sampler(name, None)[0].name
    except (UnknownSamplerError, ValueError, KeyError):
        return None


def _model(p: Any) -> Any:
    def resolve(name: str) -> str | None:
        try:
            info = p.pipeline.models.resolve(name)
        except Exception:  # noqa: BLE001 - any lookup failure means "not found"
            return None
        return None if getattr(info, "error", None) else info.title
    return resolve
