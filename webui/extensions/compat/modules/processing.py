"""A1111's `modules.processing` on our pipeline.

* `process_images(p)` is the pipeline's own (`webui.processing.pipeline.process_images`).
* `StableDiffusionProcessingTxt2Img` / `StableDiffusionProcessingImg2Img` are thin subclasses of
  our `Processing` / `ProcessingImg2Img` that take A1111's keyword arguments: the request fields
  build a request, the rest (`outpath_samples`, `outpath_grids`, `extra_generation_params`,
  `overlay_images`, ...) are set on the object, and it is bound to the app's pipeline.
  `isinstance(p, StableDiffusionProcessingImg2Img)` is also true for the jobs the app itself
  makes (which are plain `ProcessingImg2Img`), and `StableDiffusionProcessing` matches both.
* `Processed` is ours (`images`, `infotexts`, `info` as a dict, grids apart); called with A1111's
  arguments `Processed(p, images_list, seed, info, ...)` — as a selectable script's `run()` does to
  return its own pictures — it builds ours, the first `index_of_first_image` images being grids.
* `fix_seed(p)`, `get_fixed_seed(seed)`, `create_infotext(p, all_prompts, all_seeds, all_subseeds,
  comments=None, iteration=0, position_in_batch=0)` (our infotext), `opt_C`, `opt_f`.
"""
from __future__ import annotations

from typing import Any

from webui.extensions.compat import binding
from webui.processing import infotext_stage
from webui.processing.context import Processed as NativeProcessed
from webui.processing.context import Processing, ProcessingImg2Img
from webui.processing.pipeline import process_images  # noqa: F401 - A1111's name, our function
from webui.processing.prompts_stage import fixed_seed
from webui.processing.requests import Img2ImgRequest, Txt2ImgRequest


opt_C = 4  # latent channels
opt_f = 8  # VAE downscale factor

# A1111 constructor arguments that are not request fields: set on the object as given
_A1111_ONLY = {"outpath_samples", "outpath_grids", "extra_generation_params", "overlay_images", "do_not_reload_embeddings",
               "seed_enable_extras", "ddim_discretize", "token_merging_ratio", "token_merging_ratio_hr",
               "firstpass_image", "is_using_inpainting_conditioning"}


def _split(request_cls: type, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    req: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for k, v in kwargs.items():
        if k == "sd_model":
            continue  # the pipeline uses the loaded model (or override_settings' checkpoint)
        if k in request_cls.model_fields:
            if v is not None or request_cls.model_fields[k].default is None:
                req[k] = v  # None for a field whose default is not None: A1111's "unset", the default applies
        elif k in _A1111_ONLY:
            extra[k] = v
        else:
            raise TypeError(f"{request_cls.__name__.replace('Request', '')}: unexpected keyword argument {k!r}")
    return req, extra


class _CompatMeta(type):
    """isinstance() against A1111's class names also accepts the app's own objects: `native` is our
    class; `txt2img_only` leaves out img2img jobs (which are Processing objects too)."""

    native: type
    txt2img_only: bool

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls.native) and not (cls.txt2img_only and isinstance(obj, ProcessingImg2Img))

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, cls.native) and not (cls.txt2img_only and issubclass(sub, ProcessingImg2Img))


class StableDiffusionProcessing(Processing, metaclass=_CompatMeta):
    """A1111's base class name: `isinstance(p, StableDiffusionProcessing)` for any job."""
    native = Processing
    txt2img_only = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("construct StableDiffusionProcessingTxt2Img or StableDiffusionProcessingImg2Img")


class StableDiffusionProcessingTxt2Img(Processing, metaclass=_CompatMeta):
    """A txt2img job built from A1111's keyword arguments, bound to the app's pipeline."""
    native = Processing
    txt2img_only = True

    def __init__(self, **kwargs: Any) -> None:
        req, extra = _split(Txt2ImgRequest, kwargs)
        Processing.__init__(self, Txt2ImgRequest(**req))
        _finish(self, extra)


class StableDiffusionProcessingImg2Img(ProcessingImg2Img, metaclass=_CompatMeta):
    """An img2img job built from A1111's keyword arguments (`init_images`, `mask`, ...)."""
    native = ProcessingImg2Img
    txt2img_only = False

    def __init__(self, **kwargs: Any) -> None:
        if "image_mask" in kwargs and "mask" not in kwargs:
            kwargs["mask"] = kwargs.pop("image_mask")
        req, extra = _split(Img2ImgRequest, kwargs)
        ProcessingImg2Img.__init__(self, Img2ImgRequest(**req))
        _finish(self, extra)


def _finish(p: Processing, extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if k == "extra_generation_params":
            p.extra_generation_params.update(v or {})
        else:
            setattr(p, k, v)
    p.pipeline = binding.current().pipeline


class Processed(NativeProcessed, metaclass=_CompatMeta):
    """Our result; constructed with A1111's arguments when a script makes its own."""
    native = NativeProcessed
    txt2img_only = False

    def __init__(self, p: Processing, images_list: list[Any], seed: int = -1, info: str = "",
                 subseed: int | None = None, all_prompts: list[str] | None = None,
                 all_negative_prompts: list[str] | None = None, all_seeds: list[int] | None = None,
                 all_subseeds: list[int] | None = None, index_of_first_image: int = 0,
                 infotexts: list[str] | None = None, comments: str = "", extra_images_list: list[Any] | None = None) -> None:
        images = list(images_list) + list(extra_images_list or [])
        texts = list(infotexts) if infotexts is not None else [info] * len(images_list)
        texts += [info] * (len(images) - len(texts))
        n = max(0, int(index_of_first_image))
        prompt = p.prompt if isinstance(p.prompt, str) else (p.prompt[0] if p.prompt else "")
        negative = p.negative_prompt if isinstance(p.negative_prompt, str) else (p.negative_prompt[0] if p.negative_prompt else "")
        data: dict[str, Any] = {
            "prompt": prompt, "negative_prompt": negative,
            "all_prompts": list(all_prompts if all_prompts is not None else (p.all_prompts or [prompt])),
            "all_negative_prompts": list(all_negative_prompts if all_negative_prompts is not None
                                         else (p.all_negative_prompts or [negative])),
            "seed": seed, "all_seeds": list(all_seeds if all_seeds is not None else (p.all_seeds or [seed])),
            "subseed": subseed if subseed is not None else (p.all_subseeds[0] if p.all_subseeds else None),
            "all_subseeds": list(all_subseeds if all_subseeds is not None else p.all_subseeds),
            "width": p.width, "height": p.height, "steps": p.steps, "cfg_scale": p.cfg_scale,
            "sampler_name": p.sampler_name, "batch_size": p.batch_size, "styles": list(p.styles or []),
            "extra_generation_params": dict(p.extra_generation_params), "index_of_first_image": n,
            "infotexts": texts[n:], "comments": comments, "warnings": list(p.warnings),
            "job_timestamp": p.state.job_timestamp if p.state else "",
        }
        NativeProcessed.__init__(self, images[n:], texts[n:], data, [], images[:n], texts[:n])


def get_fixed_seed(seed: Any) -> Any:
    """-1 / None / "" → a random seed (A1111's)."""
    return fixed_seed(seed)


def fix_seed(p: Processing) -> None:
    p.seed = fixed_seed(p.seed)
    p.subseed = fixed_seed(p.subseed)


def create_infotext(p: Processing, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int],
                    comments: Any = None, iteration: int = 0, position_in_batch: int = 0,
                    use_main_prompt: bool = False, index: int | None = None,
                    all_negative_prompts: list[str] | None = None) -> str:
    """The infotext of one image of a job that has started (our infotext, with these lists)."""
    if p.sampler is None or p.sd_model is None or p.opts is None:
        raise RuntimeError("create_infotext needs a job that has started (process_images sets p.sampler, "
                           "p.sd_model and p.opts)")
    if index is None:
        index = position_in_batch + iteration * p.batch_size
    if use_main_prompt:
        index = 0
    saved = (p.all_prompts, p.all_seeds, p.all_subseeds, p.all_negative_prompts)
    n = max(len(all_prompts), len(all_seeds), 1)
    p.all_prompts = list(all_prompts) or [p.prompt if isinstance(p.prompt, str) else ""] * n
    p.all_seeds, p.all_subseeds = list(all_seeds), list(all_subseeds) or [0] * len(all_seeds)
    negs = all_negative_prompts if all_negative_prompts is not None else p.all_negative_prompts
    p.all_negative_prompts = list(negs) + [""] * (len(p.all_prompts) - len(negs))
    try:
        return infotext_stage.create_infotext(p, min(index, len(p.all_seeds) - 1))
    finally:
        p.all_prompts, p.all_seeds, p.all_subseeds, p.all_negative_prompts = saved

__all__ = [
    "Processed", "StableDiffusionProcessing", "StableDiffusionProcessingImg2Img",
    "StableDiffusionProcessingTxt2Img", "create_infotext", "fix_seed", "get_fixed_seed", "opt_C", "opt_f",
    "process_images"
]
