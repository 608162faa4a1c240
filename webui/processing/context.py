"""The per-job `Processing` context (A1111's `StableDiffusionProcessing`, `p`) and its result.

One object carries everything a generation is: the request's values (A1111's field names, so
extensions read `p.steps`, `p.all_prompts`, `p.extra_generation_params`, ...), the job's options
snapshot, the resolved model, sampler and schedule, the per-image lists filled before the first
batch, and the per-batch state. Every stage takes it; scripts may change it between stages.
Nothing of a job lives on the shared services.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from webui.processing.requests import Img2ImgRequest, Txt2ImgRequest

if TYPE_CHECKING:
    from webui.engine.samplers import SamplerInfo, ScheduleType
    from webui.processing.options import OptionsSnapshot
    from webui.processing.pipeline import Pipeline
    from webui.processing.scripts import JobScripts
    from webui.services.jobs import JobState
    from webui.services.model_service import LoadedModel

# request fields that are about the transport, not the job
_NOT_COPIED = {"send_images", "save_images", "infotext", "sampler_index", "mask", "extra_generation_params"}


def _copy(v: Any) -> Any:
    # lists and dicts are the job's own (a script editing p.styles must not edit the request)
    if isinstance(v, list):
        return list(v)
    if isinstance(v, dict):
        return dict(v)
    return v


class Processing:
    """A txt2img job. Attributes named as A1111's `StableDiffusionProcessingTxt2Img`."""

    is_img2img = False
    mode = "txt2img"

    # --- request values (set from the request in __init__; listed for readers and type checkers)
    prompt: str | list[str]
    negative_prompt: str | list[str]
    styles: list[str]
    seed: int | list[int]
    subseed: int | list[int]
    subseed_strength: float
    seed_resize_from_h: int
    seed_resize_from_w: int
    sampler_name: str
    scheduler: str | None
    batch_size: int
    n_iter: int
    steps: int
    cfg_scale: float
    width: int | None
    height: int | None
    restore_faces: bool | None
    tiling: bool | None
    do_not_save_samples: bool
    do_not_save_grid: bool
    eta: float | None
    denoising_strength: float | None
    s_min_uncond: float | None
    s_churn: float | None
    s_tmax: float | None
    s_tmin: float | None
    s_noise: float | None
    override_settings: dict[str, Any]
    override_settings_restore_afterwards: bool
    refiner_checkpoint: str | None
    refiner_switch_at: float | None
    disable_extra_networks: bool
    comments: dict[str, Any]
    enable_hr: bool
    firstphase_width: int
    firstphase_height: int
    hr_scale: float
    hr_upscaler: str | None
    hr_second_pass_steps: int
    hr_resize_x: int
    hr_resize_y: int
    hr_checkpoint_name: str | None
    hr_sampler_name: str | None
    hr_scheduler: str | None
    hr_prompt: str
    hr_negative_prompt: str
    force_task_id: str | None
    script_name: str | None
    script_args: list[Any]
    alwayson_scripts: dict[str, Any]

    def __init__(self, req: Txt2ImgRequest, *, save: bool = True) -> None:
        for name in type(req).model_fields:
            if name not in _NOT_COPIED:
                setattr(self, name, _copy(getattr(req, name)))
        self.request = req
        self.sampler_name = req.effective_sampler
        self.override_settings = dict(req.override_settings or {})
        self.comments = dict(req.comments or {})
        self.styles = list(req.styles or [])
        # the API's save_images=False is A1111's do_not_save_samples/grid
        self.do_not_save_samples = bool(req.do_not_save_samples) or not save
        self.do_not_save_grid = bool(req.do_not_save_grid) or not save
        self.extra_generation_params: dict[str, Any] = dict(getattr(req, "extra_generation_params", None) or {})
        if self.firstphase_width > 0 or self.firstphase_height > 0:
            # A1111's legacy hires fields: the first pass runs at this size
            self.width = self.firstphase_width or self.width
            self.height = self.firstphase_height or self.height
        self.outpath_samples: str | None = None  # filled from the options when the job starts
        self.outpath_grids: str | None = None

        # --- filled by the pipeline
        self.pipeline: Pipeline | None = None
        self.state: JobState | None = None
        self.opts: OptionsSnapshot | None = None
        self.sd_model: LoadedModel | None = None
        self.scripts: JobScripts | None = None
        self.sampler: SamplerInfo | None = None
        self.schedule: ScheduleType | None = None
        self.hr_sampler: SamplerInfo | None = None
        self.hr_schedule: ScheduleType | None = None
        self.hr_size: tuple[int, int] | None = None  # (width, height) of the hires pass
        self.hr_crop: tuple[int, int] = (0, 0)
        self.all_prompts: list[str] = []
        self.all_negative_prompts: list[str] = []
        self.all_hr_prompts: list[str] = []
        self.all_hr_negative_prompts: list[str] = []
        self.all_seeds: list[int] = []
        self.all_subseeds: list[int] = []
        # per batch (A1111 names)
        self.iteration = 0
        self.batch_index = 0
        self.prompts: list[str] = []
        self.negative_prompts: list[str] = []
        self.hr_prompts: list[str] = []
        self.hr_negative_prompts: list[str] = []
        self.seeds: list[int] = []
        self.subseeds: list[int] = []
        self.extra_network_data: dict[str, list[Any]] = {}
        self.warnings: list[str] = []
        self.embeddings_used: dict[str, Any] = {}
        self.network_infotext: dict[str, Any] = {}
        # image index -> ("Interrupted" or "Skipped", where its sampling stopped)
        self.incomplete: dict[int, tuple[str, str]] = {}
        self.controlnet_infotext: list[str] = []
        self.control_stack: Any = None   # ControlNet units of this job (set by the ControlNet script)
        self.prep: Any = None            # img2img: the prepared latents and masks
        self.clip_skip = 1
        self.cond_prompts: list[str] = []     # the batch's prompts as the text encoder sees them (tags out)
        self.cond_hr_prompts: list[str] = []
        self.rng_infotext: str | None = "CPU"  # what the noise source writes as "RNG" (None: A1111's GPU)

    # ---- A1111 helpers extensions call ----
    def comment(self, text: str) -> None:
        self.comments[text] = 1

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    @property
    def denoising_for_infotext(self) -> float | None:
        """A1111 writes "Denoising strength" for hires fix (txt2img) and always for img2img."""
        if self.hr_size is None:
            return None
        return 0.75 if self.denoising_strength is None else self.denoising_strength

    def sd_model_default_size(self) -> int:
        """The size a job without width/height runs at (the loaded model's native size)."""
        models = self.pipeline.models if self.pipeline is not None else None
        cur = models.current if models is not None else None
        return int(cur.sd.default_size) if cur is not None else 512

    @property
    def n_images(self) -> int:
        return self.batch_size * self.n_iter

    def opt(self, key: str, default: Any = None) -> Any:
        assert self.opts is not None, "options are taken when the job starts"
        return self.opts.get(key, default)

    def outdir(self, kind: str) -> Path:
        """Where this job's samples ("samples") or grids ("grids") go."""
        assert self.pipeline is not None
        explicit = self.outpath_samples if kind == "samples" else self.outpath_grids
        if explicit:
            return Path(explicit)
        # A1111: outdir_samples / outdir_grids, when set, win over the per-mode folders
        return Path(self.opt(f"outdir_{kind}") or self.opt(f"outdir_{self.mode}_{kind}") or
                    self.pipeline.outputs_dir / f"{self.mode}-{'images' if kind == 'samples' else 'grids'}")


class ProcessingImg2Img(Processing):
    """An img2img/inpaint job (A1111's `StableDiffusionProcessingImg2Img`)."""

    is_img2img = True
    mode = "img2img"

    init_images: list[Image.Image]
    resize_mode: int | str
    image_cfg_scale: float | None
    mask_blur_x: int
    mask_blur_y: int
    mask_blur: int | None
    mask_round: bool
    inpainting_fill: int
    inpaint_full_res: bool
    inpaint_full_res_padding: int
    inpainting_mask_invert: int
    initial_noise_multiplier: float | None
    latent_mask: Any
    include_init_images: bool

    def __init__(self, req: Img2ImgRequest, *, save: bool = True) -> None:
        super().__init__(req, save=save)
        self.image_mask: Image.Image | None = req.mask  # A1111's name for the mask

    @property
    def mask(self) -> Image.Image | None:
        return self.image_mask

    @property
    def denoising_for_infotext(self) -> float | None:
        return 0.75 if self.denoising_strength is None else self.denoising_strength


@dataclass
class Processed:
    """A job's result (A1111's `Processed`): the images, their infotexts, grids (shown and returned
    first), the saved paths, and the JSON info the API returns."""
    images: list[Image.Image]
    infotexts: list[str]
    info: dict[str, Any]
    paths: list[Path] = field(default_factory=list)
    grids: list[Image.Image] = field(default_factory=list)
    grid_infotexts: list[str] = field(default_factory=list)
    grid_path: Path | None = None
    memory: str = ""  # peak memory of the job (the line under the gallery)

    @property
    def grid(self) -> Image.Image | None:
        return self.grids[0] if self.grids else None

    @property
    def index_of_first_image(self) -> int:
        return len(self.grids)

    @property
    def seed(self) -> int | None:
        return self.info.get("seed")

    @property
    def all_seeds(self) -> list[int]:
        return list(self.info.get("all_seeds") or [])

    @property
    def all_prompts(self) -> list[str]:
        return list(self.info.get("all_prompts") or [])

    def shown(self, with_grids: bool = True) -> tuple[list[Image.Image], list[str]]:
        """Grids first, then the images (A1111's gallery and API order)."""
        if not with_grids:
            return list(self.images), list(self.infotexts)
        texts = list(self.grid_infotexts) + [""] * (len(self.grids) - len(self.grid_infotexts))
        return list(self.grids) + list(self.images), texts + list(self.infotexts)

    def info_for(self, with_grids: bool = True) -> dict[str, Any]:
        """The info JSON as the result stands now (a script may have added images after the run):
        `infotexts` are the images' (grids not included), `index_of_first_image` says how many
        grids come before the images in `images`."""
        out = dict(self.info)
        out["infotexts"] = list(self.infotexts)
        out["index_of_first_image"] = len(self.grids) if with_grids else 0
        return out

    def js(self, with_grids: bool = True) -> str:
        import json
        return json.dumps(self.info_for(with_grids), ensure_ascii=False, default=str)


GenerationResult = Processed  # the name the skins used before the pipeline had A1111's names
