"""img2img and inpainting: the txt2img generation path started from encoded images.

Only what differs lives here — preparing the images and masks (A1111's
StableDiffusionProcessingImg2Img.init), the noised start, the mask blend at every step, and the
overlay that puts the untouched original back; batches, prompts, networks, infotext and saving
are `Txt2ImgService`'s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from webui.engine import vae as vae_ops
from webui.engine.controlnet import ControlStack
from webui.engine.loop import PassConfig, run_pass
from webui.engine.noise import NoiseSource
from webui.imaging import masks
from webui.imaging.decode import ImageInputError, check_size
from webui.imaging.resize import RESIZE_MODES, flatten, resize_image, resize_mode_index
from webui.services import stages
from webui.services.model_service import LoadedModel
from webui.services.requests import INPAINTING_FILL, Img2ImgRequest, Txt2ImgRequest
from webui.services.txt2img import GenerationError, Txt2ImgService, _Plan


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
    warnings: list[str] = field(default_factory=list)
    fill_noise: bool = False                   # masked content "latent noise"
    noise_multiplier: float = 1.0


class Img2ImgService(Txt2ImgService):
    mode = "img2img"

    def validate(self, req: Txt2ImgRequest) -> _Plan:
        if isinstance(req, Img2ImgRequest):
            if not req.init_images:
                raise GenerationError("img2img needs an input image (init_images)")
            for i, im in enumerate(req.init_images):
                if not isinstance(im, Image.Image):
                    raise GenerationError(f"init_images[{i}] is not an image")
                try:
                    check_size(im, f"init_images[{i}]")
                except ImageInputError as e:
                    raise GenerationError(str(e)) from None
            if req.mask is not None and not isinstance(req.mask, Image.Image):
                raise GenerationError("mask is not an image")
            try:
                resize_mode_index(req.resize_mode)
            except ValueError as e:
                raise GenerationError(str(e)) from None
            if not 0 <= req.inpainting_fill < len(INPAINTING_FILL):
                raise GenerationError(f"inpainting_fill must be 0..3 ({', '.join(INPAINTING_FILL)}), "
                                      f"got {req.inpainting_fill}")
            strength = 0.75 if req.denoising_strength is None else req.denoising_strength
            if not 0.0 <= strength <= 1.0:
                raise GenerationError(f"denoising_strength must be between 0 and 1, got {strength}")
            blur = (req.mask_blur, req.mask_blur) if req.mask_blur is not None else (req.mask_blur_x, req.mask_blur_y)
            if not all(0 <= b <= 64 for b in blur):
                raise GenerationError("mask_blur must be between 0 and 64")
            if not 0 <= req.inpaint_full_res_padding <= 256:
                raise GenerationError("inpaint_full_res_padding must be between 0 and 256")
            if req.initial_noise_multiplier is not None and not 0 <= req.initial_noise_multiplier <= 1.5:
                raise GenerationError("initial_noise_multiplier must be between 0 and 1.5")
            if req.enable_hr:
                req = req.model_copy(update={"enable_hr": False})  # hires fix is txt2img's; A1111 ignores it
        return super().validate(req)

    # ---- preparation (A1111's img2img init) ----
    def _prepare(self, req: Txt2ImgRequest, plan: _Plan, model: LoadedModel) -> tuple[Txt2ImgRequest, Any]:
        assert isinstance(req, Img2ImgRequest)
        sd = model.sd
        opts = self.settings
        width, height = int(req.width), int(req.height)  # type: ignore[arg-type]
        mode = resize_mode_index(req.resize_mode)
        strength = 0.75 if req.denoising_strength is None else float(req.denoising_strength)
        bg = str(opts.get("img2img_background_color") or "#ffffff")
        inits = [flatten(im, bg) for im in req.init_images]
        batch = req.batch_size if len(inits) == 1 else len(inits)
        if batch != req.batch_size:
            req = req.model_copy(update={"batch_size": batch})
        params: dict[str, Any] = {}
        warnings: list[str] = []
        req = self._control_units_default_to_init(req, inits[0])

        blur_x, blur_y = ((req.mask_blur, req.mask_blur) if req.mask_blur is not None
                          else (req.mask_blur_x, req.mask_blur_y))
        image_mask: Image.Image | None = None
        mask_for_overlay: Image.Image | None = None
        crop: tuple[int, int, int, int] | None = None
        paste_box = None
        empty_mask = False
        if req.mask is not None:
            m = req.mask
            if m.size != inits[0].size:  # a mask of another size is scaled to the image, not refused
                m = m.resize(inits[0].size, Image.Resampling.LANCZOS)
            image_mask = masks.binary_mask(m, req.mask_round)
            if req.inpainting_mask_invert:
                image_mask = Image.eval(image_mask, lambda v: 255 - v)
                params["Mask mode"] = "Inpaint not masked"
            empty_mask = image_mask.getbbox() is None
            if blur_x > 0 or blur_y > 0:
                image_mask = masks.blur(image_mask, blur_x, blur_y)
                params["Mask blur"] = blur_x if blur_x == blur_y else f"{blur_x}x{blur_y}"
            if req.inpaint_full_res and not empty_mask:
                mask_for_overlay = image_mask
                region = masks.crop_region(image_mask, req.inpaint_full_res_padding)
                assert region is not None
                crop = masks.expand_crop_region(region, width, height, image_mask.width, image_mask.height)
                x1, y1, x2, y2 = crop
                image_mask = resize_image(2, image_mask.crop(crop), width, height)
                paste_box = (x1, y1, x2 - x1, y2 - y1)
                params["Inpaint area"] = "Only masked"
                params["Masked area padding"] = req.inpaint_full_res_padding
            else:
                image_mask = resize_image(mode, image_mask, width, height)
                # doubled so the blurred edge reaches full opacity halfway in (A1111)
                arr = np.clip(np.asarray(image_mask, np.float32) * 2, 0, 255).astype(np.uint8)
                mask_for_overlay = Image.fromarray(arr)

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
            if image_mask is not None and req.inpainting_fill == 0:
                lm = req.latent_mask if isinstance(req.latent_mask, Image.Image) else image_mask
                im = masks.fill(im, lm.convert("L").resize(im.size))
            pixels.append(im)
        if image_mask is not None and req.inpainting_fill != 1:
            params["Masked content"] = INPAINTING_FILL[req.inpainting_fill]

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
            lm = req.latent_mask if isinstance(req.latent_mask, Image.Image) else image_mask
            lat = lm.convert("L").resize((init_latent.shape[3], init_latent.shape[2]))
            latmask = torch.from_numpy(np.asarray(lat, np.float32) / 255.0)
            if req.mask_round:
                latmask = latmask.round()
            nmask_t = latmask[None, None].to(dev, init_latent.dtype)
            mask_t = 1.0 - nmask_t
            if req.inpainting_fill == 3:  # latent nothing (latent noise is added per batch: it needs the seeds)
                init_latent = init_latent * mask_t

        image_cond = None
        if getattr(sd, "inpainting", False):
            image_cond = self._masked_image_conditioning(model, source, image_mask, req.mask_round)

        passthrough = None
        if strength == 0 or empty_mask:
            # nothing is repainted: the (resized) input is the result, without a lossy VAE round trip
            base = [resize_image(mode, im, width, height) if crop is None else im for im in inits]
            passthrough = base * batch if len(base) == 1 else base
            if empty_mask:
                warnings.append("The mask is empty: nothing to inpaint, the input image is returned unchanged.")
        mult = req.initial_noise_multiplier
        if mult is None:
            mult = float(opts.get("initial_noise_multiplier"))
        if mult != 1.0:
            params["Noise multiplier"] = mult
        if image_cond is not None and float(opts.get("inpainting_mask_weight")) != 1.0:
            params["Conditional mask weight"] = float(opts.get("inpainting_mask_weight"))
        return req, Img2ImgPrep(init_latent, strength, mask_t, nmask_t, image_cond, overlays, paste_box,
                                passthrough, params, warnings,
                                fill_noise=req.inpainting_fill == 2 and image_mask is not None,
                                noise_multiplier=float(mult))

    @staticmethod
    def _control_units_default_to_init(req: Img2ImgRequest, init: Image.Image) -> Img2ImgRequest:
        """A ControlNet unit without its own image uses the img2img picture (sd-webui-controlnet)."""
        scripts = dict(req.alwayson_scripts or {})
        key = next((k for k in scripts if str(k).lower() == "controlnet"), None)
        args = (scripts.get(key) or {}).get("args") if key is not None else None
        if not args:
            return req
        rgb = np.asarray(init.convert("RGB"))
        units = [dict(u, image=rgb) if isinstance(u, dict) and u.get("enabled", True)
                 and u.get("image") is None and u.get("input_image") is None else u for u in args]
        scripts[key] = dict(scripts[key], args=units)
        return req.model_copy(update={"alwayson_scripts": scripts})

    def _masked_image_conditioning(self, model: LoadedModel, source: torch.Tensor, image_mask: Image.Image | None,
                                   round_mask: bool) -> torch.Tensor:
        """9-channel inpainting models see the mask and the image with the hole greyed out (A1111's
        inpainting_image_conditioning, with the inpainting_mask_weight setting)."""
        sd = model.sd
        if image_mask is not None:
            cm = torch.from_numpy(np.asarray(image_mask.convert("L"), np.float32) / 255.0)[None, None]
            if round_mask:
                cm = cm.round()
        else:
            cm = torch.ones(1, 1, *source.shape[-2:])
        weight = float(self.settings.get("inpainting_mask_weight"))
        signed = source * 2 - 1
        masked = torch.lerp(signed, signed * (1.0 - cm), weight)
        lat = stages.encode(model, (masked + 1) / 2)
        cm = F.interpolate(cm, size=lat.shape[-2:]).to(lat.device).expand(lat.shape[0], -1, -1, -1)
        return torch.cat([cm, lat], dim=1)

    # ---- sampling ----
    def _first_pass(self, prep: Any, model: LoadedModel, cfg: PassConfig, conds: Any, noise: NoiseSource,
                    on_step: Any, controls: ControlStack | None, idx: slice) -> torch.Tensor:
        assert isinstance(prep, Img2ImgPrep)
        sd = model.sd
        init = prep.init_latent[: len(noise.seeds)]
        if prep.passthrough is not None:
            return init
        if prep.fill_noise:
            init = init * prep.mask + noise.first().to(init.device, init.dtype) * prep.nmask
        cfg.denoising_strength = prep.strength
        cfg.fixed_steps = bool(self.settings.get("img2img_fix_steps"))
        cfg.noise_multiplier = prep.noise_multiplier
        # denoising 1 starts from noise alone (the input no longer shows through, even at a low sigma_max)
        cfg.init_latent = None if prep.strength >= 1.0 else init

        def setup(d: Any) -> None:
            if controls:
                d.controls = controls
            if prep.mask is not None:
                # every step's prediction keeps the original outside the mask (A1111's apply_blend)
                d.after_cfg_hooks.append(lambda den, step: den * prep.nmask + init * prep.mask)

        ic = prep.image_cond
        if ic is not None:
            ic = ic[: len(noise.seeds)]
        lat = stages.sample(model, lambda: run_pass(sd.unet, sd.family, sd.prediction_type, model.schedule, cfg, conds,
                                                    noise, on_step, image_conditioning=ic,
                                                    denoiser_setup=setup).latents,
                            rows=2 * len(noise.seeds), width=cfg.width, height=cfg.height, controls=controls,
                            noise=noise)
        if prep.mask is not None:
            lat = lat * prep.nmask + init * prep.mask
        return lat

    def _finish_image(self, prep: Any, img: Image.Image, k: int) -> Image.Image:
        assert isinstance(prep, Img2ImgPrep)
        row = k % prep.init_latent.shape[0]
        if prep.passthrough is not None:
            return prep.passthrough[row].copy()
        if prep.overlays is not None:
            return masks.apply_overlay(img, prep.overlays[row], prep.paste_box)
        return img

    def _extra_params(self, prep: Any, req: Txt2ImgRequest) -> dict[str, Any]:
        out = dict(prep.params) if isinstance(prep, Img2ImgPrep) else {}
        out.update(getattr(req, "extra_generation_params", None) or {})
        return out

    def _warnings(self, prep: Any) -> list[str]:
        return list(prep.warnings) if isinstance(prep, Img2ImgPrep) else []

    def _denoising(self, req: Txt2ImgRequest, plan: _Plan) -> float | None:
        return 0.75 if req.denoising_strength is None else req.denoising_strength


__all__ = ["Img2ImgService", "Img2ImgPrep", "RESIZE_MODES"]
