"""The ControlNet accordion (sd-webui-controlnet's layout): one tab per unit.

Each unit's values become one `alwayson_scripts.controlnet.args` entry of the request, so the UI and
the API drive exactly the same code.  "Preview" runs the preprocessor and shows the detected map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr
import numpy as np

if TYPE_CHECKING:
    from webui.services.container import Services


@dataclass
class UnitControls:
    enabled: gr.Checkbox
    image: gr.Image
    pixel_perfect: gr.Checkbox
    module: gr.Dropdown
    model: gr.Dropdown
    weight: gr.Slider
    start: gr.Slider
    end: gr.Slider
    res: gr.Slider
    threshold_a: gr.Slider
    threshold_b: gr.Slider
    control_mode: gr.Radio
    resize_mode: gr.Radio
    detected: gr.Image

    def components(self) -> list[Any]:
        return [self.enabled, self.image, self.pixel_perfect, self.module, self.model, self.weight, self.start,
                self.end, self.res, self.threshold_a, self.threshold_b, self.control_mode, self.resize_mode]

    def to_unit(self, d: dict) -> dict[str, Any] | None:
        if not d[self.enabled]:
            return None
        img = d[self.image]
        return {"enabled": True, "image": None if img is None else np.asarray(img)[:, :, :3],
                "pixel_perfect": bool(d[self.pixel_perfect]), "module": d[self.module] or "none",
                "model": d[self.model] or "None", "weight": d[self.weight], "guidance_start": d[self.start],
                "guidance_end": d[self.end], "processor_res": d[self.res], "threshold_a": d[self.threshold_a],
                "threshold_b": d[self.threshold_b], "control_mode": d[self.control_mode],
                "resize_mode": d[self.resize_mode]}


def create_controlnet_accordion(svc: "Services", prefix: str) -> list[UnitControls]:
    from webui.engine.controlnet import CONTROL_MODES
    from webui.networks.controlnet_units import PREPROCESSORS, RESIZE_MODES, ControlNetError, preprocess

    def model_choices() -> list[str]:
        svc.models.controlnets.refresh()
        return ["None"] + [f.title for f in svc.models.controlnets.usable()]

    n = int(svc.settings.get("control_net_unit_count"))
    units: list[UnitControls] = []
    with gr.Accordion("ControlNet", open=False, elem_id=f"{prefix}_controlnet"):
        with gr.Tabs():
            for i in range(n):
                with gr.Tab(f"ControlNet Unit {i}", elem_id=f"{prefix}_controlnet_unit_{i}_tab"):
                    with gr.Row():
                        image = gr.Image(label="Control image", type="numpy", image_mode="RGB", height=256,
                                         elem_id=f"{prefix}_controlnet_unit_{i}_image")
                        detected = gr.Image(label="Preprocessor preview", type="numpy", interactive=False,
                                            height=256, elem_id=f"{prefix}_controlnet_unit_{i}_detected")
                    with gr.Row():
                        enabled = gr.Checkbox(label="Enable", value=False, elem_id=f"{prefix}_controlnet_unit_{i}_enable")
                        pixel_perfect = gr.Checkbox(label="Pixel Perfect", value=False,
                                                    elem_id=f"{prefix}_controlnet_unit_{i}_pixel_perfect")
                    with gr.Row():
                        module = gr.Dropdown(list(PREPROCESSORS), value="none", label="Preprocessor",
                                             elem_id=f"{prefix}_controlnet_unit_{i}_module")
                        choices = model_choices()
                        model = gr.Dropdown(choices, value=choices[1] if len(choices) > 1 else "None", label="Model",
                                            elem_id=f"{prefix}_controlnet_unit_{i}_model")
                        refresh = gr.Button("🔄", size="sm", scale=0, min_width=44,
                                            elem_id=f"{prefix}_controlnet_unit_{i}_refresh")
                        preview = gr.Button("💥 Preview", size="sm", scale=0, min_width=90,
                                            elem_id=f"{prefix}_controlnet_unit_{i}_preview")
                    with gr.Row():
                        weight = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Control Weight",
                                           elem_id=f"{prefix}_controlnet_unit_{i}_weight")
                        start = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Starting Control Step",
                                          elem_id=f"{prefix}_controlnet_unit_{i}_start")
                        end = gr.Slider(0.0, 1.0, value=1.0, step=0.01, label="Ending Control Step",
                                        elem_id=f"{prefix}_controlnet_unit_{i}_end")
                    with gr.Row():
                        res = gr.Slider(64, 2048, value=512, step=8, label="Preprocessor resolution",
                                        elem_id=f"{prefix}_controlnet_unit_{i}_res")
                        ta = gr.Slider(1, 255, value=100, step=1, label="Canny Low Threshold / Threshold",
                                       elem_id=f"{prefix}_controlnet_unit_{i}_threshold_a")
                        tb = gr.Slider(1, 255, value=200, step=1, label="Canny High Threshold",
                                       elem_id=f"{prefix}_controlnet_unit_{i}_threshold_b")
                    control_mode = gr.Radio(list(CONTROL_MODES), value="Balanced", label="Control Mode",
                                            elem_id=f"{prefix}_controlnet_unit_{i}_control_mode")
                    resize_mode = gr.Radio(list(RESIZE_MODES), value="Crop and Resize", label="Resize Mode",
                                           elem_id=f"{prefix}_controlnet_unit_{i}_resize_mode")

                    def run_preview(img: Any, mod: str, r: float, a: float, b: float) -> Any:
                        if img is None:
                            gr.Warning("Upload a control image first", title="ControlNet")
                            return None
                        try:
                            return preprocess(mod or "none", np.asarray(img)[:, :, :3].astype(np.uint8), int(r), a, b)
                        except ControlNetError as e:
                            gr.Warning(str(e), title="ControlNet")
                            return None

                    preview.click(run_preview, [image, module, res, ta, tb], detected, api_visibility="private")
                    refresh.click(lambda: gr.update(choices=model_choices()), None, model, show_progress="hidden",
                                  api_visibility="private")
                    units.append(UnitControls(enabled, image, pixel_perfect, module, model, weight, start, end, res,
                                              ta, tb, control_mode, resize_mode, detected))
    return units
