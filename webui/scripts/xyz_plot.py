"""A1111's "X/Y/Z plot": one generation per combination of up to three axes' values, drawn as a
labelled grid per Z value and a grid of those.

script_args (A1111 1.10's order): x_type, x_values, x_values_dropdown, y_type, y_values,
y_values_dropdown, z_type, z_values, z_values_dropdown, draw_legend, include_lone_images,
include_sub_grids, no_fixed_seeds, vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size, csv_mode.
An axis type is the index into this tab's axis list (A1111) or its label ("Steps").
Only axes for features this app has are listed; nothing is faked.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Callable

from PIL import Image

from webui.engine.samplers import SAMPLERS, SCHEDULE_TYPES, UnknownSamplerError, resolve_sampler
from webui.imaging.grid_annotations import draw_xyz_grid, format_remove_path, style_from_options
from webui.processing import checks, output_stage
from webui.processing.context import Processed
from webui.processing.errors import GenerationError
from webui.processing.pipeline import process_images
from webui.processing.prompts_stage import fixed_seed
from webui.processing.requests import LATENT_UPSCALE_MODES
from webui.processing.scripts import ArgInfo, Script
from webui.scripts import axis_values

log = logging.getLogger(__name__)
MAX_IMAGES = 4096  # cells × images per cell in one plot


@dataclass
class AxisOption:
    """A1111's AxisOption: how an axis parses its values and applies one to a job."""
    label: str
    kind: str                                   # "int" | "float" | "str"
    apply: Callable[[Any, Any, list[Any]], None]  # (p, value, all values)
    format: Callable[["AxisOption", Any], str] | None = None
    confirm: Callable[[Any, list[Any]], None] | None = None  # (p, values) raises GenerationError
    cost: float = 0.0
    choices: Callable[[Any], list[str]] | None = None  # (pipeline) → names for the dropdown
    txt2img: bool = True
    img2img: bool = True

    def label_for(self, value: Any) -> str:
        if self.format is not None:
            return self.format(self, value)
        if isinstance(value, float):
            value = round(value, 8)
        return f"{self.label}: {value}"


def _field(name: str) -> Callable[[Any, Any, list[Any]], None]:
    def apply(p: Any, v: Any, _vs: list[Any]) -> None:
        setattr(p, name, v)
    return apply


def _override(key: str) -> Callable[[Any, Any, list[Any]], None]:
    def apply(p: Any, v: Any, _vs: list[Any]) -> None:
        p.override_settings[key] = v
    return apply


def _prompt_sr(p: Any, v: Any, vs: list[Any]) -> None:
    try:
        p.prompt, p.negative_prompt = axis_values.prompt_sr(p.prompt, p.negative_prompt, str(vs[0]), str(v))
    except ValueError as e:
        raise GenerationError(f"X/Y/Z plot, Prompt S/R: {e}") from None


def _prompt_order(p: Any, v: Any, _vs: list[Any]) -> None:
    try:
        p.prompt = axis_values.prompt_order(p.prompt, list(v))
    except ValueError as e:
        raise GenerationError(f"X/Y/Z plot, Prompt order: {e}") from None


def _styles(p: Any, v: Any, _vs: list[Any]) -> None:
    p.styles = list(p.styles) + [s for s in str(v).split(",") if s.strip()] if v else list(p.styles)


def _checkpoint(p: Any, v: Any, _vs: list[Any]) -> None:
    p.override_settings["sd_model_checkpoint"] = v
    p.override_settings_restore_afterwards = False  # the plot restores the model once, at the end


def _confirm_samplers(p: Any, vs: list[Any]) -> None:
    for v in vs:
        try:
            resolve_sampler(str(v), None)
        except (UnknownSamplerError, ValueError, KeyError):
            raise GenerationError(f"X/Y/Z plot: unknown sampler {v!r}; choose from "
                                  f"{[s.name for s in SAMPLERS]}") from None


def _confirm_schedules(p: Any, vs: list[Any]) -> None:
    known = {s.label for s in SCHEDULE_TYPES} | {s.name for s in SCHEDULE_TYPES}
    for v in vs:
        if str(v) not in known:
            raise GenerationError(f"X/Y/Z plot: unknown schedule type {v!r}; choose from "
                                  f"{[s.label for s in SCHEDULE_TYPES]}")


def _confirm_checkpoints(p: Any, vs: list[Any]) -> None:
    from webui.services.model_service import ModelLoadError
    for v in vs:
        try:
            info = p.pipeline.models.resolve(str(v))
        except (KeyError, ModelLoadError, ValueError):
            raise GenerationError(f"X/Y/Z plot: checkpoint {v!r} not found") from None
        if getattr(info, "error", None):
            raise GenerationError(f"X/Y/Z plot: checkpoint {v!r} is unusable: {info.error}")


def _confirm_vaes(p: Any, vs: list[Any]) -> None:
    names = set(_vae_choices(p.pipeline))
    for v in vs:
        if str(v) not in names:
            raise GenerationError(f"X/Y/Z plot: VAE {v!r} not found; choose from {sorted(names)}")


def _confirm_upscalers(p: Any, vs: list[Any]) -> None:
    names = _upscaler_choices(p.pipeline)
    for v in vs:
        if str(v) not in names:
            raise GenerationError(f"X/Y/Z plot: hires upscaler {v!r} not found; choose from {names}")


def _confirm_styles(p: Any, vs: list[Any]) -> None:
    styles = p.pipeline.styles
    known = set(styles.styles) if styles is not None else set()
    for v in vs:
        for s in str(v).split(","):
            if s.strip() and s not in known:
                raise GenerationError(f"X/Y/Z plot: style {s!r} not found")


def _face_restore(p: Any, v: Any, _vs: list[Any]) -> None:
    p.restore_faces = str(v).strip().lower() in ("yes", "true", "1", "on")


def _confirm_yes_no(p: Any, vs: list[Any]) -> None:
    for v in vs:
        if str(v).strip().lower() not in ("yes", "no", "true", "false", "1", "0", "on", "off"):
            raise GenerationError(f"X/Y/Z plot, Face restore: {v!r} is not Yes or No")


def _confirm_rng(p: Any, vs: list[Any]) -> None:
    for v in vs:
        if str(v) not in ("GPU", "CPU", "NV"):
            raise GenerationError(f"X/Y/Z plot: RNG source {v!r} is not one of GPU, CPU, NV")


def _checkpoint_choices(pipeline: Any) -> list[str]:
    return [c.title for c in pipeline.models.registry.list() if not c.error]


def _vae_choices(pipeline: Any) -> list[str]:
    return ["Automatic", "None"] + [v["model_name"] for v in pipeline.models.vae_listing() if not v.get("error")]


def _upscaler_choices(pipeline: Any) -> list[str]:
    return list(LATENT_UPSCALE_MODES) + pipeline.image_upscalers()


def _format_path(opt: AxisOption, v: Any) -> str:
    return f"{opt.label}: {format_remove_path(str(v))}"


def _format_list(opt: AxisOption, v: Any) -> str:
    return ", ".join(v) if isinstance(v, (list, tuple)) else str(v)


def _format_nothing(opt: AxisOption, v: Any) -> str:
    return ""


def _format_plain(opt: AxisOption, v: Any) -> str:
    return str(v)


def _visible_samplers(pl: Any) -> list[str]:
    """The Sampler axes' choices: every sampler but those A1111's hide_samplers option hides."""
    settings = getattr(pl, "settings", None)
    hidden = set(settings.get("hide_samplers") or ()) if settings is not None else set()
    return [s.name for s in SAMPLERS if s.name not in hidden]


AXES: list[AxisOption] = [
    AxisOption("Nothing", "str", lambda p, v, vs: None, format=_format_nothing),
    AxisOption("Seed", "int", _field("seed")),
    AxisOption("Var. seed", "int", _field("subseed")),
    AxisOption("Var. strength", "float", _field("subseed_strength")),
    AxisOption("Steps", "int", _field("steps")),
    AxisOption("Hires steps", "int", _field("hr_second_pass_steps"), img2img=False),
    AxisOption("CFG Scale", "float", _field("cfg_scale")),
    AxisOption("Prompt S/R", "str", _prompt_sr, format=_format_plain),
    AxisOption("Prompt order", "str", _prompt_order, format=_format_list),
    AxisOption("Sampler", "str", _field("sampler_name"), format=_format_plain, confirm=_confirm_samplers,
               choices=_visible_samplers),
    AxisOption("Hires sampler", "str", _field("hr_sampler_name"), format=_format_plain, confirm=_confirm_samplers,
               choices=_visible_samplers, img2img=False),
    AxisOption("Schedule type", "str", _field("scheduler"), confirm=_confirm_schedules,
               choices=lambda pl: [s.label for s in SCHEDULE_TYPES]),
    AxisOption("Checkpoint name", "str", _checkpoint, format=_format_path, confirm=_confirm_checkpoints, cost=1.0,
               choices=_checkpoint_choices),
    AxisOption("Negative Guidance minimum sigma", "float", _field("s_min_uncond")),
    AxisOption("Sigma Churn", "float", _field("s_churn")),
    AxisOption("Sigma min", "float", _field("s_tmin")),
    AxisOption("Sigma max", "float", _field("s_tmax")),
    AxisOption("Sigma noise", "float", _field("s_noise")),
    AxisOption("Eta", "float", _field("eta")),
    AxisOption("Clip skip", "int", _override("CLIP_stop_at_last_layers")),
    AxisOption("Denoising", "float", _field("denoising_strength")),
    AxisOption("Initial noise multiplier", "float", _field("initial_noise_multiplier"), txt2img=False),
    AxisOption("Hires upscaler", "str", _field("hr_upscaler"), confirm=_confirm_upscalers,
               choices=_upscaler_choices, img2img=False),
    AxisOption("Cond. Image Mask Weight", "float", _override("inpainting_mask_weight"), txt2img=False),
    AxisOption("VAE", "str", _override("sd_vae"), confirm=_confirm_vaes, cost=0.7, choices=_vae_choices),
    AxisOption("Styles", "str", _styles, choices=lambda pl: list(pl.styles.styles) if pl.styles else [],
               confirm=_confirm_styles),
    AxisOption("Face restore", "str", _face_restore, format=_format_plain, confirm=_confirm_yes_no,
               choices=lambda pl: ["Yes", "No"]),
    AxisOption("Refiner checkpoint", "str", _field("refiner_checkpoint"), format=_format_path,
               confirm=_confirm_checkpoints, cost=1.0, choices=_checkpoint_choices),
    AxisOption("Refiner switch at", "float", _field("refiner_switch_at")),
    AxisOption("RNG source", "str", _override("randn_source"), format=_format_plain, confirm=_confirm_rng,
               choices=lambda pl: ["GPU", "CPU", "NV"]),
]


def axes_for(is_img2img: bool) -> list[AxisOption]:
    return [a for a in AXES if (a.img2img if is_img2img else a.txt2img)]


def find_axis(options: list[AxisOption], kind: Any) -> AxisOption:
    """By A1111's index into the tab's list, or by label (case-insensitive)."""
    if isinstance(kind, bool):
        kind = int(kind)
    if isinstance(kind, (int, float)) or (isinstance(kind, str) and kind.strip().isdigit()):
        i = int(kind)
        if not 0 <= i < len(options):
            raise GenerationError(f"X/Y/Z plot: axis type {i} is out of range 0..{len(options) - 1}")
        return options[i]
    key = str(kind or "Nothing").strip().lower()
    for a in options:
        if a.label.lower() == key:
            return a
    raise GenerationError(f"X/Y/Z plot: unknown axis type {kind!r}; choose from {[a.label for a in options]}")


def axis_values_for(p: Any, opt: AxisOption, text: Any, dropdown: Any, csv_mode: bool,
                    no_fixed_seeds: bool) -> list[Any]:
    if opt.label == "Nothing":
        return [None]
    if opt.choices is not None and not csv_mode and dropdown:
        values: list[Any] = list(dropdown) if isinstance(dropdown, (list, tuple)) else [dropdown]
    else:
        try:
            if opt.label == "Prompt order":
                values = axis_values.prompt_order_values(str(text or ""))
            else:
                values = list(axis_values.parse_axis(str(text or ""), opt.kind))  # type: ignore[arg-type]
        except ValueError as e:
            raise GenerationError(f"X/Y/Z plot, {opt.label}: {e}") from None
    if not values:
        raise GenerationError(f"X/Y/Z plot: the {opt.label} axis has no values")
    if opt.label in ("Seed", "Var. seed") and not no_fixed_seeds:
        values = axis_values.fix_axis_seeds(values)
    if opt.confirm is not None:
        opt.confirm(p, values)
    return values


class XYZPlot(Script):
    def title(self) -> str:
        return "X/Y/Z plot"

    def arg_infos(self, is_img2img: bool) -> list[ArgInfo]:
        labels = [a.label for a in axes_for(is_img2img)]
        out: list[ArgInfo] = []
        for axis, default in (("X", "Seed"), ("Y", "Nothing"), ("Z", "Nothing")):
            out += [ArgInfo(f"{axis} type", default, choices=labels, kind="dropdown"),
                    ArgInfo(f"{axis} values", "", kind="textbox"),
                    ArgInfo(f"{axis} values", None, kind="multiselect")]
        out += [ArgInfo("Draw legend", True, kind="checkbox"),
                ArgInfo("Include Sub Images", False, kind="checkbox"),
                ArgInfo("Include Sub Grids", False, kind="checkbox"),
                ArgInfo("Keep -1 for seeds", False, kind="checkbox"),
                ArgInfo("Vary seeds for X", False, kind="checkbox"),
                ArgInfo("Vary seeds for Y", False, kind="checkbox"),
                ArgInfo("Vary seeds for Z", False, kind="checkbox"),
                ArgInfo("Grid margins (px)", 0, 0, 500, 2, kind="slider"),
                ArgInfo("Use text inputs instead of dropdowns", False, kind="checkbox")]
        return out

    def run(self, p: Any, x_type: Any = "Seed", x_values: Any = "", x_dropdown: Any = None,
            y_type: Any = "Nothing", y_values: Any = "", y_dropdown: Any = None,
            z_type: Any = "Nothing", z_values: Any = "", z_dropdown: Any = None,
            draw_legend: Any = True, include_lone_images: Any = False, include_sub_grids: Any = False,
            no_fixed_seeds: Any = False, vary_x: Any = False, vary_y: Any = False, vary_z: Any = False,
            margin_size: Any = 0, csv_mode: Any = False, *_: Any) -> Processed:
        options = axes_for(p.is_img2img)
        opts = [find_axis(options, t) for t in (x_type, y_type, z_type)]
        if not no_fixed_seeds:  # one seed for every cell, written into each infotext (A1111)
            p.seed, p.subseed = fixed_seed(p.seed), fixed_seed(p.subseed)
        vals = [axis_values_for(p, o, t, d, bool(csv_mode), bool(no_fixed_seeds))
                for o, t, d in zip(opts, (x_values, y_values, z_values), (x_dropdown, y_dropdown, z_dropdown))]
        xs, ys, zs = vals
        nx, ny, nz = len(xs), len(ys), len(zs)
        if nx * ny * nz * p.n_images > MAX_IMAGES:
            raise GenerationError(f"X/Y/Z plot: {nx}x{ny}x{nz} cells of {p.n_images} image(s) is too many")
        size = p.sd_model_default_size()
        checks.check_pixels(p, nx * ny * nz * p.n_images, p.width or size, p.height or size, "the X/Y/Z plot")
        first, second = axis_values.processing_order(*(o.cost for o in opts))
        models = p.pipeline.models
        previous = models.current.info.title if models.current is not None else None
        state = p.state
        if state is not None:
            state.job_count = nx * ny * nz * p.n_iter
        cells: list[Image.Image | None] = [None] * (nx * ny * nz)
        texts: list[str] = [""] * (nx * ny * nz)
        warnings: list[str] = []
        order = _cheapest_switches(list(axis_values.iter_cells(nx, ny, nz, first, second)), opts, vals, previous)
        try:
            for done, (ix, iy, iz) in enumerate(order):
                if state is not None and state.interrupted:
                    break  # a partial grid: the cells not made are drawn black
                pc = _copy(p)
                if state is not None:
                    state.textinfo = f"X/Y/Z plot: cell {done + 1} of {len(order)}"
                for o, vs, i in zip(opts, vals, (ix, iy, iz)):
                    o.apply(pc, vs[i], vs)
                if bool(vary_x) or bool(vary_y) or bool(vary_z):
                    pc.seed = axis_values.cell_seed(int(pc.seed), ix, iy, iz, nx, ny, bool(vary_x), bool(vary_y),
                                                    bool(vary_z))
                res = process_images(pc)
                shown, shown_texts = res.shown()
                idx = axis_values.cell_index(ix, iy, iz, nx, ny)
                if shown:
                    cells[idx], texts[idx] = shown[0], shown_texts[0]
                warnings += [w for w in pc.warnings if w not in warnings]
        finally:
            if previous and (models.current is None or models.current.info.title != previous):
                models.load(previous)  # the plot leaves the model the user had
        return self._result(p, opts, vals, cells, texts, warnings, bool(draw_legend), bool(include_lone_images),
                            bool(include_sub_grids), int(margin_size or 0))

    def _result(self, p: Any, opts: list[AxisOption], vals: list[list[Any]], cells: list[Image.Image | None],
                texts: list[str], warnings: list[str], legend: bool, lone: bool, sub_grids: bool,
                margin: int) -> Processed:
        if all(c is None for c in cells):
            raise GenerationError("X/Y/Z plot was interrupted before any cell was made")
        labels = [[o.label_for(v) if o.label != "Nothing" else "" for v in vs] for o, vs in zip(opts, vals)]
        first = next(c for c in cells if c is not None)
        font = max(10, (first.width + first.height) // 25)  # small models: A1111's size would be unreadable
        grids = draw_xyz_grid(cells, *labels, draw_legend=legend, include_sub_grids=sub_grids,
                              margin_size=margin, include_lone_images=False, font_size=font,
                              **style_from_options(p.opt if p.opts is not None else (lambda _key: None)))
        n_sub = len(grids) - 1
        if len(vals[2]) == 1 and n_sub == 1:
            grids = grids[:1]  # one Z value: its sub-grid is the grid
        first_text = next((t for t in texts if t), "")
        grid_texts = [first_text] * len(grids)
        paths = []
        grid_path = None
        if p.opts is not None and p.opt("grid_save") and not p.do_not_save_grid:
            for g in grids:
                path = output_stage.save(p, g, first_text, None, grid=True)
                grid_path = grid_path or path
        images = [c for c in cells if c is not None] if lone else []
        image_texts = [t for c, t in zip(cells, texts) if c is not None] if lone else []
        info = {"prompt": p.prompt, "negative_prompt": p.negative_prompt, "seed": p.seed, "subseed": p.subseed,
                "all_seeds": [p.seed], "infotexts": image_texts, "index_of_first_image": len(grids),
                "warnings": warnings, "width": grids[0].width, "height": grids[0].height,
                "cell_infotexts": texts}
        return Processed(images, image_texts, info, paths, grids, grid_texts, grid_path)


def _copy(p: Any) -> Any:
    """A cell's own job: the plot's values with fresh containers (A1111 copies p per cell)."""
    pc = copy.copy(p)
    pc.styles = list(p.styles)
    pc.override_settings = dict(p.override_settings)
    pc.extra_generation_params = dict(p.extra_generation_params)
    pc.comments = dict(p.comments)
    pc.warnings = []
    return pc


def _cheapest_switches(order: list[tuple[int, int, int]], opts: list[AxisOption], vals: list[list[Any]],
                       current: str | None) -> list[tuple[int, int, int]]:
    """With a checkpoint axis outermost, start with the checkpoint already loaded (one load saved)."""
    for axis, o in enumerate(opts):
        if o.label == "Checkpoint name" and current is not None:
            try:
                first = next(i for i, v in enumerate(vals[axis]) if str(v) in (current, current.split(" [")[0]))
            except StopIteration:
                return order
            return sorted(order, key=lambda c: 0 if c[axis] == first else 1)  # stable: the rest keep their order
    return order
