"""ControlNet as A1111's sd-webui-controlnet runs it: an always-on script whose arguments are the
units (`alwayson_scripts: {"controlnet": {"args": [unit, ...]}}`, the same dicts its API takes).

In `process` the enabled units are checked, their maps made and their models loaded; the
sampling stage hands `p.control_stack` to the denoiser of each pass (the hires pass gets the
maps fitted to its size).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from webui.networks.controlnet_units import ControlNetError, build_units
from webui.processing.errors import GenerationError
from webui.processing.scripts import AlwaysVisible, ArgInfo, Script


class ControlNetScript(Script):
    # one argument per unit; the API and the UI send unit dicts
    args = [ArgInfo(f"ControlNet Unit {i}", None) for i in range(3)]

    def title(self) -> str:
        return "ControlNet"

    def show(self, is_img2img: bool) -> Any:
        return AlwaysVisible

    def process(self, p: Any, *units: Any) -> None:
        from webui.engine.controlnet import ControlStack

        units_in = [u for u in units if u]
        if len(units_in) == 1 and isinstance(units_in[0], list):
            units_in = units_in[0]  # the whole list passed as one argument
        if not units_in:
            return
        if p.is_img2img and p.init_images:
            units_in = _default_to_init(units_in, p.init_images[0])
        sd = p.sd_model.sd
        try:
            runtime, infos, _maps = build_units(
                units_in, p.pipeline.models.controlnets,
                p.width, p.height, p.sd_model.policy.device, next(sd.unet.parameters()).dtype,
                int(p.opt("control_net_unit_count")), sd.unet.config, p.hr_size)
        except ControlNetError as e:
            raise GenerationError(str(e)) from None
        p.controlnet_infotext = list(infos)
        p.control_stack = ControlStack(runtime) if runtime else None


def _default_to_init(units: list[Any], init: Any) -> list[Any]:
    """A unit without its own image uses the img2img picture (sd-webui-controlnet)."""
    rgb = np.asarray(init.convert("RGB"))
    return [dict(u, image=rgb) if isinstance(u, dict) and u.get("enabled", True)
            and u.get("image") is None and u.get("input_image") is None else u for u in units]
