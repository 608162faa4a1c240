"""The Checkpoint Merger tab (A1111's layout): A, B, C, method, multiplier, fp16, config and metadata options."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.ui.common import checkpoint_titles
from webui.ui.page_caller import page_owner

if TYPE_CHECKING:
    from webui.services.container import Services


def create_merger_tab(svc: "Services") -> dict[str, Any]:
    from webui.models.merge import CONFIG_SOURCES, METHODS

    titles = checkpoint_titles(svc)
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("A merger of the checkpoints below; the result is written to the checkpoint folder "
                        "as `.safetensors` with the recipe in its metadata.")
            with gr.Row():
                # custom values allowed: a title gains its [hash] once the file is first hashed, and a
                # choice made before that must still be accepted (names resolve with or without it)
                primary = gr.Dropdown(titles, label="Primary model (A)", elem_id="modelmerger_primary_model_name",
                                      allow_custom_value=True)
                secondary = gr.Dropdown(titles, label="Secondary model (B)", allow_custom_value=True,
                                        elem_id="modelmerger_secondary_model_name")
                tertiary = gr.Dropdown(titles, label="Tertiary model (C)", allow_custom_value=True,
                                       elem_id="modelmerger_tertiary_model_name")
                refresh = gr.Button("🔄", elem_id="modelmerger_refresh", size="sm", scale=0, min_width=44)
            name = gr.Textbox(label="Custom Name (Optional)", elem_id="modelmerger_custom_name")
            multiplier = gr.Slider(0.0, 1.0, value=0.3, step=0.05, label="Multiplier (M) - set to 0 to get model A",
                                   elem_id="modelmerger_interp_amount")
            method = gr.Radio(list(METHODS), value="Weighted sum", label="Interpolation Method",
                              elem_id="modelmerger_interp_method")
            half = gr.Checkbox(label="Save as float16", value=False, elem_id="modelmerger_save_as_half")
            config = gr.Radio(list(CONFIG_SOURCES), value=CONFIG_SOURCES[0], type="index", label="Copy config from",
                              elem_id="modelmerger_config_method")
            with gr.Row():  # A1111 shows these three beside each other
                save_meta = gr.Checkbox(label="Save metadata", value=True, elem_id="modelmerger_save_metadata")
                add_recipe = gr.Checkbox(label="Add merge recipe metadata", value=True,
                                         elem_id="modelmerger_add_recipe")
                copy_meta = gr.Checkbox(label="Copy metadata from merged models", value=True,
                                        elem_id="modelmerger_copy_metadata")
            merge = gr.Button("Merge", variant="primary", elem_id="modelmerger_merge")
        with gr.Column():
            result = gr.Markdown("", elem_id="modelmerger_result")

    def do_refresh() -> tuple[Any, Any, Any]:
        svc.registry.refresh()
        t = checkpoint_titles(svc)
        return gr.update(choices=t), gr.update(choices=t), gr.update(choices=t)

    def do_merge(a: str | None, b: str | None, c: str | None, custom: str, m: float, how: str,
                 fp16: bool, cfg: int | None, meta: bool, recipe: bool, copy: bool,
                 request: gr.Request) -> tuple[str, Any, Any, Any]:
        try:
            out = svc.merge_checkpoints(a, b, c, how, float(m), bool(fp16), custom, save_metadata=bool(meta),
                                        add_merge_recipe=bool(recipe), copy_metadata=bool(copy),
                                        config_source=int(cfg or 0), owner=page_owner(svc, request))
        except Exception as e:  # MergeError, ModelLoadError, OSError: a message, never a dead page
            gr.Warning(str(e), title="Merge failed")
            return f"❌ **Merge failed:** {e}", gr.update(), gr.update(), gr.update()
        t = checkpoint_titles(svc)
        return (f"✅ Checkpoint saved to `{out}`", gr.update(choices=t), gr.update(choices=t), gr.update(choices=t))

    refresh.click(do_refresh, None, [primary, secondary, tertiary], show_progress="hidden", api_visibility="private")
    merge_event = merge.click(do_merge, [primary, secondary, tertiary, name, multiplier, method, half, config,
                                         save_meta, add_recipe, copy_meta],
                              [result, primary, secondary, tertiary], api_visibility="private")
    # merge_event: the page chains the top checkpoint dropdown's refresh on it (a merge is listed at once)
    return {"primary": primary, "secondary": secondary, "tertiary": tertiary, "result": result,
            "merge_event": merge_event}
