"""What img2img and inpainting change in the pipeline: checking the images and masks, preparing
them once per job (A1111's StableDiffusionProcessingImg2Img.init: resize modes, mask blur/invert,
"only masked" crop, masked content fill, the overlay of the original), the noised start with the
mask blend at every step, and putting the untouched original back on each image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from webui.engine import memory_stages as stages
from webui.engine import vae as vae_ops
from webui.engine.loop import run_pass
from webui.engine.noise import NoiseSource
from webui.imaging import masks
from webui.imaging.decode import ImageInputError, check_size
from webui.imaging.resize import flatten, resize_image, resize_mode_index
from webui.processing.errors import GenerationError
from webui.processing.requests import INPAINTING_FILL
from webui.processing.sampling_stage import (OnStep, before_every_sampling, denoiser_setup, first_pass_config,
                                             refiner, with_extra_noise)

if TYPE_CHECKING:
    from webui.processing.context import ProcessingImg2Img


@dataclass
class Img2ImgPrep:
    """Everything a batch needs, computed once per job (every iteration reuses it)."""
    init_latent: torch.Tensor                  # [B, C, h, w], B = batch size
    strength: float
    mask: torch.Tensor | None = None           # latent-size, 1 = keep the original
    nmask: torch.Tensor | None = None          # 1 - mask
    image_cond: torch.Tensor | None = None     # 9-channel inpainting models: mask + masked-image latent
    overlays: list[Image.Image] | None = None  # original with alpha = not repainted, one per batch row
    paste_box: tuple[int, int, int, int] | None = None  # "only masked": where the result goes back
    passthrough: list[Image.Image] | None = None  # nothing to do (denoising 0, empty mask): these images
    params: dict[str, Any] = field(default_factory=dict)
    fill_noise: bool = False                   # masked content "latent noise"
    noise_multiplier: float = 1.0
    color_targets: list | None = None          # img2img_color_correction: each input in LAB, per batch row


def check(p: "ProcessingImg2Img") -> None:
    if not p.init_images:
        raise GenerationError("img2img needs an input image (init_images)")
    for i, im in enumerate(p.init_images):
        if not isinstance(im, Image.Image):
            raise GenerationError(f"init_images[{i}] is not an image")
        try:
            check_size(im, f"init_images[{i}]")
        except ImageInputError as e:
            raise GenerationError(str(e)) from None
    if p.image_mask is not None and not isinstance(p.image_mask, Image.Image):
        raise GenerationError("mask is not an image")
    try:
        resize_mode_index(p.resize_mode)
    except ValueError as e:
        raise GenerationError(str(e)) from None
    if not 0 <= p.inpainting_fill < len(INPAINTING_FILL):
        raise GenerationError(f"inpainting_fill must be 0..3 ({', '.join(INPAINTING_FILL)}), got {p.inpainting_fill}")
    strength = 0.75 if p.denoising_strength is None else p.denoising_strength
    if not 0.0 <= strength <= 1.0:
        raise GenerationError(f"denoising_strength must be between 0 and 1, got {strength}")
    if not all(0 <= b <= 64 for b in blur_xy(p)):
        raise GenerationError("mask_blur must be between 0 and 64")
    if not 0 <= p.inpaint_full_res_padding <= 256:
        raise GenerationError("inpaint_full_res_padding must be between 0 and 256")
    if p.initial_noise_multiplier is not None and not 0 <= p.initial_noise_multiplier <= 1.5:
        raise GenerationError("initial_noise_multiplier must be between 0 and 1.5")


def blur_xy(p: "ProcessingImg2Img") -> tuple[int, int]:
    return (p.mask_blur, p.mask_blur) if p.mask_blur is not None else (p.mask_blur_x, p.mask_blur_y)


def _mask_for_job(p: "ProcessingImg2Img", first: Image.Image, width: int, height: int, mode: int,
                  params: dict[str, Any]) -> tuple[Image.Image | None, Image.Image | None, Any, Any, bool]:
    """(mask at processing size, mask for the overlay, crop box, paste box, mask is empty)."""
    if p.image_mask is None:
        return None, None, None, None, False
    blur_x, blur_y = blur_xy(p)
    m = p.image_mask
    if m.size != first.size:  # a mask of another size is scaled to the image, not refused
        m = m.resize(first.size, Image.Resampling.LANCZOS)
    image_mask = masks.binary_mask(m, p.mask_round)
    if p.inpainting_mask_invert:
        image_mask = Image.eval(image_mask, lambda v: 255 - v)
        params["Mask mode"] = "Inpaint not masked"
    empty = image_mask.getbbox() is None
    if blur_x > 0 or blur_y > 0:
        image_mask = masks.blur(image_mask, blur_x, blur_y)
        params["Mask blur"] = blur_x if blur_x == blur_y else f"{blur_x}x{blur_y}"
    if p.inpaint_full_res and not empty:
        for_overlay = image_mask
        region = masks.crop_region(image_mask, p.inpaint_full_res_padding)
        assert region is not None
        crop = masks.expand_crop_region(region, width, height, image_mask.width, image_mask.height)
        x1, y1, x2, y2 = crop
        image_mask = resize_image(2, image_mask.crop(crop), width, height)
        params["Inpaint area"] = "Only masked"
        params["Masked area padding"] = p.inpaint_full_res_padding
        return image_mask, for_overlay, crop, (x1, y1, x2 - x1, y2 - y1), empty
    image_mask = resize_image(mode, image_mask, width, height)
    # doubled so the blurred edge reaches full opacity halfway in (A1111)
    arr = np.clip(np.asarray(image_mask, np.float32) * 2, 0, 255).astype(np.uint8)
    return image_mask, Image.fromarray(arr), None, None, empty


def prepare(p: "ProcessingImg2Img") -> Img2ImgPrep:
    """A1111's img2img init; sets p.batch_size to the number of input images when there are several."""
    model = p.sd_model
    sd = model.sd
    width, height = int(p.width), int(p.height)
    mode = resize_mode_index(p.resize_mode)
    strength = 0.75 if p.denoising_strength is None else float(p.denoising_strength)
    inits = [flatten(im, str(p.opt("img2img_background_color") or "#ffffff")) for im in p.init_images]
    batch = p.batch_size if len(inits) == 1 else len(inits)
    p.batch_size = batch
    params: dict[str, Any] = {}
    image_mask, mask_for_overlay, crop, paste_box, empty_mask = _mask_for_job(p, inits[0], width, height, mode, params)

    overlays: list[Image.Image] | None = [] if image_mask is not None else None
    pixels: list[Image.Image] = []
    for im in inits:
        if crop is None and mode != 3:
            im = resize_image(mode, im, width, height)
        if image_mask is not None:
            assert mask_for_overlay is not None and overlays is not None
            if mask_for_overlay.size != im.size:
                mask_for_overlay = resize_image(mode, mask_for_overlay, im.width, im.height)
            overlays.append(masks.overlay(im, mask_for_overlay))
        if crop is not None:
            im = resize_image(2, im.crop(crop), width, height)
        if image_mask is not None and p.inpainting_fill == 0:
            lm = p.latent_mask if isinstance(p.latent_mask, Image.Image) else image_mask
            im = masks.fill(im, lm.convert("L").resize(im.size))
        pixels.append(im)
    if image_mask is not None and p.inpainting_fill != 1:
        params["Masked content"] = INPAINTING_FILL[p.inpainting_fill]
    color_targets = None
    if p.opt("img2img_color_correction"):  # A1111: towards each (resized) input picture
        from webui.imaging.color_correction import correction_target
        color_targets = [correction_target(im) for im in pixels]
        if len(color_targets) == 1:
            color_targets = color_targets * batch

    source = vae_ops.from_pil(pixels)  # [n, 3, H, W] in [0, 1]
    if len(pixels) == 1:
        source = source.repeat(batch, 1, 1, 1)
        if overlays is not None:
            overlays = overlays * batch
    dev = model.policy.device
    init_latent = stages.encode(model, source).to(dev)
    vsf = getattr(sd, "vae_scale_factor", 8)
    if mode == 3:
        init_latent = F.interpolate(init_latent, size=(height // vsf, width // vsf), mode="bilinear")

    mask_t = nmask_t = None
    if image_mask is not None:
        # A1111's latent_mask (API): another mask for the latent blend than for the overlay
        lm = p.latent_mask if isinstance(p.latent_mask, Image.Image) else image_mask
        lat = lm.convert("L").resize((init_latent.shape[3], init_latent.shape[2]))
        latmask = torch.from_numpy(np.asarray(lat, np.float32) / 255.0)
        if p.mask_round:
            latmask = latmask.round()
        nmask_t = latmask[None, None].to(dev, init_latent.dtype)
        mask_t = 1.0 - nmask_t
        if p.inpainting_fill == 3:  # latent nothing (latent noise is added per batch: it needs the seeds)
            init_latent = init_latent * mask_t

    image_cond = None
    if getattr(sd, "inpainting", False):
        image_cond = masked_image_conditioning(p, source, image_mask)

    passthrough = None
    if strength == 0 or empty_mask:
        # nothing is repainted: the (resized) input is the result, without a lossy VAE round trip
        base = [resize_image(mode, im, width, height) if crop is None else im for im in inits]
        passthrough = base * batch if len(base) == 1 else base
        if empty_mask:
            p.warn("The mask is empty: nothing to inpaint, the input image is returned unchanged.")
    mult = p.initial_noise_multiplier
    if mult is None:
        mult = float(p.opt("initial_noise_multiplier"))
    if mult != 1.0:
        params["Noise multiplier"] = mult
    if image_cond is not None and float(p.opt("inpainting_mask_weight")) != 1.0:
        params["Conditional mask weight"] = float(p.opt("inpainting_mask_weight"))
    return Img2ImgPrep(init_latent, strength, mask_t, nmask_t, image_cond, overlays, paste_box, passthrough, params,
                       fill_noise=p.inpainting_fill == 2 and image_mask is not None, noise_multiplier=float(mult),
                       color_targets=color_targets)


def masked_image_conditioning(p: "ProcessingImg2Img", source: torch.Tensor,
                              image_mask: Image.Image | None) -> torch.Tensor:
    """9-channel inpainting models see the mask and the image with the hole greyed out (A1111's
    inpainting_image_conditioning, with the inpainting_mask_weight setting)."""
    model = p.sd_model
    if image_mask is not None:
        cm = torch.from_numpy(np.asarray(image_mask.convert("L"), np.float32) / 255.0)[None, None]
        if p.mask_round:
            cm = cm.round()
    else:
        cm = torch.ones(1, 1, *source.shape[-2:])
    weight = float(p.opt("inpainting_mask_weight"))
    signed = source * 2 - 1
    masked = torch.lerp(signed, signed * (1.0 - cm), weight)
    lat = stages.encode(model, (masked + 1) / 2)
    cm = F.interpolate(cm, size=lat.shape[-2:]).to(lat.device).expand(lat.shape[0], -1, -1, -1)
    return torch.cat([cm, lat], dim=1)


def sample(p: "ProcessingImg2Img", conds: Any, noise: NoiseSource, on_step: OnStep) -> torch.Tensor:
    prep: Img2ImgPrep = p.prep
    model, sd = p.sd_model, p.sd_model.sd
    init = prep.init_latent[: len(noise.seeds)]
    if prep.passthrough is not None:
        return init
    if prep.fill_noise:
        init = init * prep.mask + noise.first().to(init.device, init.dtype) * prep.nmask
    cfg = first_pass_config(p)
    cfg.denoising_strength = prep.strength
    cfg.fixed_steps = bool(p.opt("img2img_fix_steps"))
    cfg.noise_multiplier = prep.noise_multiplier
    # denoising 1 starts from noise alone (the input no longer shows through, even at a low sigma_max)
    cfg.init_latent = None if prep.strength >= 1.0 else init
    if cfg.init_latent is not None:
        with_extra_noise(p, cfg)

    refine = refiner(p, hires=False)

    def blend(d: Any) -> None:
        if refine is not None:
            refine(d)
        if prep.mask is not None:
            # every step's prediction keeps the original outside the mask (A1111's apply_blend)
            d.after_cfg_hooks.append(lambda den, step: den * prep.nmask + init * prep.mask)

    ic = prep.image_cond
    if ic is not None:
        ic = ic[: len(noise.seeds)]
    controls = p.control_stack
    lat = stages.sample(model, lambda: run_pass(sd.unet, sd.family, sd.prediction_type, model.schedule, cfg, conds,
                                                noise, on_step, image_conditioning=ic,
                                                denoiser_setup=denoiser_setup(p, controls, blend),
                                                before_sampling=before_every_sampling(p, conds)).latents,
                        rows=2 * len(noise.seeds), width=cfg.width, height=cfg.height, controls=controls, noise=noise)
    if prep.mask is not None:
        lat = lat * prep.nmask + init * prep.mask
    return lat


def finish_image(p: "ProcessingImg2Img", img: Image.Image, k: int) -> Image.Image:
    """The original put back where nothing was repainted (and "only masked" crops pasted into place)."""
    prep: Img2ImgPrep = p.prep
    row = k % prep.init_latent.shape[0]
    if prep.passthrough is not None:
        return prep.passthrough[row].copy()
    if prep.color_targets is not None:  # before the overlay, as A1111
        from webui.imaging.color_correction import apply_color_correction
        img = apply_color_correction(prep.color_targets[row], img)
    # A1111's overlay_inpaint off: the model's picture as it is ("only masked": the crop, not pasted back)
    if prep.overlays is not None and p.opt("overlay_inpaint", True):
        return masks.apply_overlay(img, prep.overlays[row], prep.paste_box)
    return img
