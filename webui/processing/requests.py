"""Request objects shared by the UI and the API, with A1111's field names and API defaults."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    # name → (torch interpolate mode, antialias)
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = ("None", "Lanczos", "Nearest")

# Accepted seeds (seed, subseed): -1 asks for a random one (A1111's get_fixed_seed draws 0..2**32-2, what
# A1111 seeds are in practice); any other value must lie in 0..2**64-1, the range torch.Generator's
# manual_seed takes (A1111 hands the number to it unchanged and answered 500 beyond it). Numbers outside,
# fractional floats and non-numeric strings are refused with 422; a numeric string ("42") is read as its
# number, as A1111's pydantic v1 models did. That seed + i for the batch's later images (+ the
# eta_noise_seed_delta option) stays in range is checked with the job's numbers in checks.py.
SEED_MAX = 2**64 - 1


class Txt2ImgRequest(BaseModel):
    """Fields and defaults of A1111's StableDiffusionTxt2ImgProcessingAPI. Float fields refuse NaN and
    infinities (also sent as JSON's NaN/Infinity literals or as strings): 422 naming the field."""
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str = "Euler"
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    # None: the loaded model's native size (modelspec.resolution; 512 for SD1, 1024 for SDXL)
    width: int | None = None
    height: int | None = None
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    comments: dict[str, Any] | None = None
    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    force_task_id: str | None = None
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None

    @field_validator("seed", "subseed")
    @classmethod
    def _seed_in_range(cls, v: int) -> int:
        if v != -1 and not 0 <= v <= SEED_MAX:
            raise ValueError(f"must be -1 (random) or between 0 and 2**64-1 ({SEED_MAX}), got {v}")
        return v

    @property
    def effective_sampler(self) -> str:
        return self.sampler_name or self.sampler_index or "Euler"


INPAINTING_FILL = ("fill", "original", "latent noise", "latent nothing")


class Img2ImgRequest(Txt2ImgRequest):
    """Fields and defaults of A1111's StableDiffusionImg2ImgProcessingAPI. The service takes
    PIL images in ``init_images``/``mask``; the API decodes base64 into them first."""
    init_images: list[Any] = Field(default_factory=list)
    resize_mode: int = 0
    denoising_strength: float | None = 0.75
    image_cfg_scale: float | None = None
    mask: Any = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: Any = None
    include_init_images: bool = False
    # infotext fields a built-in script adds (A1111's p.extra_generation_params)
    extra_generation_params: dict[str, Any] = Field(default_factory=dict)
