"""The Train tab (A1111's layout and elem_ids): sub-tabs on the left, A1111's output column on the right
(`ti_output` text, `ti_gallery` previews, `ti_progress`, `ti_error`).

One builder and one wiring function per sub-tab, so a sub-tab is added by writing a pair and calling
them from `create_train_tab`.  Every handler is a thin call into `svc.training`; an error becomes a
message in `ti_error` and a toast, never a dead page.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.training.embedding_files import MAX_VECTORS_PER_TOKEN
from webui.training.hypernetwork_files import (DEFAULT_LAYER_STRUCTURE, DEFAULT_SIZES, MODULE_SIZES, WEIGHT_INITS,
                                               ui_activations)

if TYPE_CHECKING:
    from webui.services.container import Services


@dataclass
class TrainOutputs:
    info: Any      # ti_output: what was created / trained
    gallery: Any   # ti_gallery: preview images
    progress: Any  # ti_progress
    error: Any     # ti_error: the last error, as HTML


@dataclass
class CreateEmbeddingTab:
    name: Any
    init_text: Any
    nvpt: Any
    overwrite: Any
    clear: Any
    create: Any
    created: Any = None  # the create event; `.then(...)` it to refresh an embedding dropdown


@dataclass
class CreateHypernetworkTab:
    tab: Any
    name: Any
    sizes: Any
    layer_structure: Any
    activation: Any
    weight_init: Any
    layer_norm: Any
    use_dropout: Any
    dropout_structure: Any
    overwrite: Any
    create: Any
    created: Any = None  # the create event; `.then(...)` it to refresh a hypernetwork dropdown


@dataclass
class TrainTab:
    tabs: Any
    embedding: CreateEmbeddingTab
    hypernetwork: CreateHypernetworkTab
    outputs: TrainOutputs


def _failure(title: str, e: Exception) -> tuple[str, str]:
    msg = str(e) or type(e).__name__
    gr.Warning(msg, title=title)
    return "", f"<p style='color: var(--error-text-color, #dc2626)'>❌ {html.escape(msg)}</p>"


# ---------------------------------------------------------------------------------- Create embedding

def build_create_embedding() -> CreateEmbeddingTab:
    name = gr.Textbox(label="Name", elem_id="train_new_embedding_name")
    init_text = gr.Textbox(label="Initialization text", value="*", elem_id="train_initialization_text",
                           info="The vectors start as this text's token vectors; empty: zeros")
    nvpt = gr.Slider(1, MAX_VECTORS_PER_TOKEN, value=1, step=1, label="Number of vectors per token",
                     elem_id="train_nvpt")
    overwrite = gr.Checkbox(False, label="Overwrite Old Embedding", elem_id="train_overwrite_old_embedding")
    with gr.Row():
        gr.HTML("", padding=False)
        clear = gr.Button("Clear", elem_id="train_clear_embedding", scale=0, min_width=120)
        create = gr.Button("Create embedding", variant="primary", elem_id="train_create_embedding", scale=0,
                           min_width=200)
    return CreateEmbeddingTab(name, init_text, nvpt, overwrite, clear, create)


def wire_create_embedding(svc: "Services", tab: CreateEmbeddingTab, out: TrainOutputs) -> None:
    def create(name: str, init_text: str | None, nvpt: Any, overwrite: bool) -> tuple[str, str]:
        try:
            if svc.training is None:
                raise RuntimeError("training is not available in this server")
            created = svc.training.create_embedding(name or "", int(round(float(nvpt))), bool(overwrite),
                                                    init_text or "")
        except Exception as e:  # ValueError, ModelLoadError, OSError: all shown, none fatal
            return _failure("Embedding not created", e)
        return created.info, ""

    tab.created = tab.create.click(create, [tab.name, tab.init_text, tab.nvpt, tab.overwrite], [out.info, out.error],
                                   api_visibility="private")
    tab.clear.click(lambda: ("", "*", 1, False, "", ""), None,
                    [tab.name, tab.init_text, tab.nvpt, tab.overwrite, out.info, out.error],
                    show_progress="hidden", api_visibility="private")


# ------------------------------------------------------------------------------- Create hypernetwork

def module_sizes(svc: "Services") -> tuple[list[str], list[str]]:
    """(choices, default value) of the Modules checkboxes: A1111's widths, plus the loaded model's
    context width when it is another one (the built-in model's is 64), ticked by default so a new
    hypernetwork acts on the model in use."""
    width = svc.training.context_width() if svc.training is not None else None
    choices = [str(s) for s in MODULE_SIZES]
    value = [str(s) for s in DEFAULT_SIZES]
    if width is not None and width not in MODULE_SIZES:
        choices.append(str(width))
        value.append(str(width))
    return choices, value


def build_create_hypernetwork(svc: "Services", tab: Any) -> CreateHypernetworkTab:
    choices, value = module_sizes(svc)
    name = gr.Textbox(label="Name", elem_id="train_new_hypernetwork_name")
    sizes = gr.CheckboxGroup(choices, value=value, label="Modules", elem_id="train_new_hypernetwork_sizes",
                             info="Context widths: 768 for SD1, 1024 for SD2")
    layer_structure = gr.Textbox(DEFAULT_LAYER_STRUCTURE, label="Enter hypernetwork layer structure",
                                 placeholder="first and last must be 1, e.g. 1, 2, 1",
                                 elem_id="train_new_hypernetwork_layer_structure")
    activation = gr.Dropdown(ui_activations(), value="linear", label="Select activation function of hypernetwork",
                             info="Swish or linear (none) are the usual choices",
                             elem_id="train_new_hypernetwork_activation_func")
    weight_init = gr.Dropdown(list(WEIGHT_INITS), value="Normal", label="Select Layer weights initialization",
                              info="Kaiming for ReLU-like activations, Xavier for sigmoid-like, Normal otherwise",
                              elem_id="train_new_hypernetwork_initialization_option")
    layer_norm = gr.Checkbox(False, label="Add layer normalization", elem_id="train_new_hypernetwork_add_layer_norm")
    use_dropout = gr.Checkbox(False, label="Use dropout", elem_id="train_new_hypernetwork_use_dropout")
    dropout_structure = gr.Textbox("0, 0, 0", label="Enter hypernetwork Dropout structure (or empty)",
                                   placeholder="one value per layer, first and last 0, e.g. 0, 0.05, 0",
                                   info="Read only with dropout on; values from 0 to below 1 (0.05 to 0.35 is usual)",
                                   elem_id="train_new_hypernetwork_dropout_structure")
    overwrite = gr.Checkbox(False, label="Overwrite Old Hypernetwork", elem_id="train_overwrite_old_hypernetwork")
    with gr.Row():
        gr.HTML("", padding=False)
        create = gr.Button("Create hypernetwork", variant="primary", elem_id="train_create_hypernetwork", scale=0,
                           min_width=200)
    return CreateHypernetworkTab(tab, name, sizes, layer_structure, activation, weight_init, layer_norm,
                                 use_dropout, dropout_structure, overwrite, create)


def wire_create_hypernetwork(svc: "Services", tab: CreateHypernetworkTab, out: TrainOutputs) -> None:
    def create(name: str, sizes: list[str] | None, structure: str, activation: str | None, init: str | None,
               layer_norm: bool, use_dropout: bool, dropout: str, overwrite: bool) -> tuple[str, str]:
        try:
            if svc.training is None:
                raise RuntimeError("training is not available in this server")
            created = svc.training.create_hypernetwork(name or "", list(sizes or []), bool(overwrite), structure,
                                                       activation, init, bool(layer_norm), bool(use_dropout),
                                                       dropout)
        except Exception as e:  # ValueError, OSError: all shown, none fatal
            return _failure("Hypernetwork not created", e)
        return created.info, ""

    tab.created = tab.create.click(create, [tab.name, tab.sizes, tab.layer_structure, tab.activation,
                                            tab.weight_init, tab.layer_norm, tab.use_dropout,
                                            tab.dropout_structure, tab.overwrite], [out.info, out.error],
                                   api_visibility="private")

    standard = {str(s) for s in MODULE_SIZES}
    offered = gr.State([c for c in module_sizes(svc)[0] if c not in standard])

    def follow_model(current: list[str] | None, was_offered: list[str] | None) -> tuple[Any, list[str]]:
        """The model may have loaded (or changed) since the page was built: offer its width, ticked
        when it is newly offered (afterwards the user's choice stands)."""
        choices, _ = module_sizes(svc)
        extra = [c for c in choices if c not in standard]
        value = [v for v in (current or []) if v in choices]
        value += [c for c in extra if c not in (was_offered or []) and c not in value]
        return gr.update(choices=choices, value=value), extra

    tab.tab.select(follow_model, [tab.sizes, offered], [tab.sizes, offered], show_progress="hidden",
                   api_visibility="private")


# ---------------------------------------------------------------------------------------- the tab

def build_outputs() -> TrainOutputs:
    info = gr.Textbox("", elem_id="ti_output", show_label=False, interactive=False, lines=2)
    gallery = gr.Gallery(label="Output", show_label=False, elem_id="ti_gallery", columns=4)
    progress = gr.HTML("", elem_id="ti_progress")
    error = gr.HTML("", elem_id="ti_error")
    return TrainOutputs(info, gallery, progress, error)


def create_train_tab(svc: "Services") -> TrainTab:
    """A1111's Train tab: Create embedding, Create hypernetwork (and the Train sub-tab when added)."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Tabs(elem_id="train_tabs") as tabs:
                with gr.Tab("Create embedding", id="create_embedding"):
                    emb = build_create_embedding()
                with gr.Tab("Create hypernetwork", id="create_hypernetwork") as hn_tab:
                    hn = build_create_hypernetwork(svc, hn_tab)
        with gr.Column(scale=2, elem_id="ti_gallery_container"):
            out = build_outputs()
    wire_create_embedding(svc, emb, out)
    wire_create_hypernetwork(svc, hn, out)
    return TrainTab(tabs, emb, hn, out)


__all__ = ["TrainTab", "TrainOutputs", "create_train_tab", "module_sizes"]
