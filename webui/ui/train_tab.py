"""The Train tab (A1111's layout and elem_ids): sub-tabs on the left (Create embedding, Create
hypernetwork, Train, Train LoRA, extensions' sub-tabs), A1111's output column on the right
(`ti_output` text, `ti_gallery` previews, `ti_progress`, `ti_error`) and the loss plot.

One builder and one wiring function per sub-tab, so a sub-tab is added by writing a pair and calling
them from `create_train_tab`.  Every handler is a thin call into `svc.training`; an error becomes a
message in `ti_error` and a toast, never a dead page.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import gradio as gr

from webui.serving.caller import Caller
from webui.training.params import EmbeddingTrainParams, HypernetworkTrainParams, LoraTrainParams
from webui.ui import train_run as tr
from webui.ui.page_caller import page_caller
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
    train: dict[str, Any] | None = None     # the Train sub-tab's components (webui/ui/train_run.py)
    lora: dict[str, Any] | None = None      # the Train LoRA sub-tab's
    loss_plot: Any = None
    timer: Any = None


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
    def create(name: str, init_text: str | None, nvpt: Any, overwrite: bool,
               request: gr.Request | None = None) -> tuple[str, str]:
        try:
            if svc.training is None:
                raise RuntimeError("training is not available in this server")
            created = svc.training.create_embedding(name or "", int(round(float(nvpt))), bool(overwrite),
                                                    init_text or "", _caller(svc, request))
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
               layer_norm: bool, use_dropout: bool, dropout: str, overwrite: bool,
               request: gr.Request | None = None) -> tuple[str, str]:
        try:
            if svc.training is None:
                raise RuntimeError("training is not available in this server")
            created = svc.training.create_hypernetwork(name or "", list(sizes or []), bool(overwrite), structure,
                                                       activation, init, bool(layer_norm), bool(use_dropout),
                                                       dropout, _caller(svc, request))
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


# --------------------------------------------------------------------------------------- Train

def _caller(svc: "Services", request: Any) -> Caller | None:
    """Who presses the button: with accounts, a non-admin trains only under names of their own.
    None outside a page event (a handler called in-process): nothing to check."""
    return None if request is None else page_caller(svc, request)


def _int(value: Any, what: str) -> int:
    if value is None or value == "":
        raise ValueError(f"{what} is empty")
    return int(round(float(value)))


def _preview_fields(enabled: bool, preview: Sequence[Any]) -> dict[str, Any]:
    """The txt2img tab's prompt, negative prompt, steps, sampler, CFG, seed, width and height when
    "Read parameters from txt2img" is on (A1111's txt2img_preview_params, in that order)."""
    if not enabled or len(preview) < len(tr.PREVIEW_KEYS):
        return {}
    v = dict(zip(tr.PREVIEW_KEYS, preview))
    out: dict[str, Any] = {"preview_prompt": str(v["preview_prompt"] or ""),
                           "preview_negative_prompt": str(v["preview_negative_prompt"] or ""),
                           "preview_sampler_name": str(v["preview_sampler_name"] or "Euler a")}
    for k in ("preview_steps", "preview_seed", "preview_width", "preview_height"):
        if v[k] is not None:
            out[k] = int(round(float(v[k])))
    if v["preview_cfg_scale"] is not None:
        out["preview_cfg_scale"] = float(v["preview_cfg_scale"])
    return out


def wire_train(svc: "Services", f: dict[str, Any], out: TrainOutputs, watch_id: Any, shown: Any, timer: Any,
               preview: Sequence[Any]) -> None:
    common = ["clip_grad_mode", "clip_grad_value", "batch_size", "gradient_step", "data_root", "log_directory",
              "template", "width", "height", "varsize", "steps", "create_image_every", "save_every", "use_weight",
              "save_image_with_stored_embedding", "preview_from_txt2img", "shuffle_tags", "tag_drop_out",
              "latent_sampling_method"]

    def common_params(d: dict[str, Any], extra: Sequence[Any]) -> dict[str, Any]:
        return dict(clip_grad_mode=d["clip_grad_mode"] or "disabled", clip_grad_value=str(d["clip_grad_value"] or ""),
                    batch_size=_int(d["batch_size"], "batch size"),
                    gradient_step=_int(d["gradient_step"], "gradient accumulation steps"),
                    data_root=str(d["data_root"] or "").strip(), log_directory=str(d["log_directory"] or ""),
                    template_filename=d["template"] or "", training_width=_int(d["width"], "width"),
                    training_height=_int(d["height"], "height"), varsize=bool(d["varsize"]),
                    steps=_int(d["steps"], "max steps"),
                    create_image_every=_int(d["create_image_every"], "save an image every N steps"),
                    use_weight=bool(d["use_weight"]), preview_from_txt2img=bool(d["preview_from_txt2img"]),
                    shuffle_tags=bool(d["shuffle_tags"]), tag_drop_out=float(d["tag_drop_out"] or 0),
                    latent_sampling_method=d["latent_sampling_method"] or "once",
                    **_preview_fields(bool(d["preview_from_txt2img"]), extra))

    def start(kind: str, request: Any, *values: Any) -> tuple[Any, ...]:
        d = dict(zip(["name", "lr"] + common, values[:len(common) + 2]))
        extra = values[len(common) + 2:]
        try:
            if svc.training is None:
                raise RuntimeError("training is not available in this server")
            if not d["name"]:
                raise ValueError(f"choose a{'n' if kind == 'embedding' else ''} {kind} to train")
            base = common_params(d, extra)
            save_every = _int(d["save_every"], "save a copy every N steps")
            if kind == "embedding":
                params: Any = EmbeddingTrainParams(embedding_name=d["name"], learn_rate=str(d["lr"] or ""),
                                                   save_embedding_every=save_every,
                                                   save_image_with_stored_embedding=bool(
                                                       d["save_image_with_stored_embedding"]), **base)
                job = svc.training.submit_train_embedding(params, _caller(svc, request))
            else:
                params = HypernetworkTrainParams(hypernetwork_name=d["name"], learn_rate=str(d["lr"] or ""),
                                                 save_hypernetwork_every=save_every, **base)
                job = svc.training.submit_train_hypernetwork(params, _caller(svc, request))
        except Exception as e:  # ValueError, TrainInputNotFound, TrainDoesNotFit: shown, none fatal
            info, err = _failure(f"{kind.capitalize()} not trained", e)
            return "", info, err, "", gr.Timer(active=False)
        wid = tr.watch(job, kind, d["name"], d["log_directory"], tr.data_dir(svc))
        return wid, f"Training {kind} {d['name']}…", "", "", gr.Timer(active=True)

    ins = [f[k] for k in common] + list(preview)
    outs = [watch_id, out.info, out.error, shown, timer]
    def start_embedding(request: gr.Request, *v: Any) -> tuple[Any, ...]:
        return start("embedding", request, *v)

    def start_hypernetwork(request: gr.Request, *v: Any) -> tuple[Any, ...]:
        return start("hypernetwork", request, *v)

    f["train_embedding"].click(start_embedding, [f["embedding"], f["embedding_lr"]] + ins, outs,
                               api_visibility="private")
    f["train_hypernetwork"].click(start_hypernetwork, [f["hypernetwork"], f["hypernetwork_lr"]] + ins,
                                  outs, api_visibility="private")

    def interrupt(request: gr.Request) -> None:
        caller = page_caller(svc, request)  # someone who is no admin stops only their own runs
        if svc.training is None or not svc.training.interrupt_training(None if caller.admin else caller.owner):
            job = svc.queue.current_job
            if job is not None and caller.may_act_on(job.owner):
                job.state.interrupt()
    f["interrupt"].click(interrupt, None, None, show_progress="hidden", api_visibility="private")
    f["refresh_embedding"].click(lambda: gr.update(choices=svc.training.embedding_names() if svc.training else []),
                                 None, f["embedding"], show_progress="hidden", api_visibility="private")
    f["refresh_hypernetwork"].click(
        lambda: gr.update(choices=svc.training.hypernetwork_names() if svc.training else []), None, f["hypernetwork"],
        show_progress="hidden", api_visibility="private")
    f["refresh_template"].click(lambda: gr.update(choices=tr.template_names(svc)), None, f["template"],
                                show_progress="hidden", api_visibility="private")


def wire_train_lora(svc: "Services", f: dict[str, Any], out: TrainOutputs, watch_id: Any, shown: Any,
                    timer: Any) -> None:
    keys = ["lora_name", "lora_data_root", "lora_log_directory", "lora_template", "lora_dim", "lora_alpha",
            "lora_target", "lora_lr", "lora_te_lr", "lora_warmup", "lora_optimizer", "lora_batch", "lora_accum",
            "lora_steps", "lora_width", "lora_height", "lora_save_every", "lora_preview_every", "lora_preview_prompt",
            "lora_precision", "lora_checkpointing", "lora_noise_offset", "lora_min_snr", "lora_seed", "lora_resume"]

    def start(request: gr.Request, *values: Any) -> tuple[Any, ...]:
        d = dict(zip(keys, values))
        try:
            if svc.training is None:
                raise RuntimeError("training is not available in this server")
            params = LoraTrainParams(
                name=str(d["lora_name"] or ""), data_root=str(d["lora_data_root"] or "").strip(),
                log_directory=str(d["lora_log_directory"] or ""), template_filename=d["lora_template"] or "",
                network_dim=_int(d["lora_dim"], "network dim"), network_alpha=float(d["lora_alpha"] or 0),
                network_target=d["lora_target"] or "transformer", learn_rate=str(d["lora_lr"] or ""),
                text_encoder_lr=float(d["lora_te_lr"] or 0), lr_warmup_steps=_int(d["lora_warmup"] or 0, "warm-up"),
                optimizer_type=d["lora_optimizer"] or "AdamW", batch_size=_int(d["lora_batch"], "batch size"),
                gradient_step=_int(d["lora_accum"], "gradient accumulation steps"),
                steps=_int(d["lora_steps"], "max steps"), training_width=_int(d["lora_width"], "width"),
                training_height=_int(d["lora_height"], "height"), save_every=_int(d["lora_save_every"] or 0, "save"),
                preview_every=_int(d["lora_preview_every"] or 0, "preview every"),
                preview_prompt=str(d["lora_preview_prompt"] or ""), mixed_precision=d["lora_precision"] or "no",
                gradient_checkpointing=bool(d["lora_checkpointing"]), noise_offset=float(d["lora_noise_offset"] or 0),
                min_snr_gamma=float(d["lora_min_snr"] or 0), seed=_int(d["lora_seed"], "seed"),
                resume=bool(d["lora_resume"]))
            job = svc.training.submit_train_lora(params, _caller(svc, request))
        except Exception as e:  # shown, never fatal
            info, err = _failure("LoRA not trained", e)
            return "", info, err, "", gr.Timer(active=False)
        from webui.training.embedding_files import sanitize_name
        name = sanitize_name(params.name)
        wid = tr.watch(job, "lora", name, params.log_directory, tr.data_dir(svc))
        return wid, f"Training LoRA {name}…", "", "", gr.Timer(active=True)

    f["train_lora"].click(start, [f[k] for k in keys], [watch_id, out.info, out.error, shown, timer],
                          api_visibility="private")
    f["lora_interrupt"].click(lambda: svc.training.interrupt_training() if svc.training else None, None, None,
                              show_progress="hidden", api_visibility="private")
    f["lora_refresh_template"].click(lambda: gr.update(choices=tr.template_names(svc)), None, f["lora_template"],
                                     show_progress="hidden", api_visibility="private")


# ---------------------------------------------------------------------------------------- the tab

def build_outputs() -> TrainOutputs:
    info = gr.Textbox("", elem_id="ti_output", show_label=False, interactive=False, lines=2)
    gallery = gr.Gallery(label="Output", show_label=False, elem_id="ti_gallery", columns=4)
    progress = gr.HTML("", elem_id="ti_progress")
    error = gr.HTML("", elem_id="ti_error")
    return TrainOutputs(info, gallery, progress, error)


def _extension_train_tabs(preview: Sequence[Any]) -> None:
    """Extensions' on_ui_train_tabs callbacks add their sub-tabs here (A1111 passes the txt2img
    preview components as `txt2img_preview_params`)."""
    import sys

    from webui.extensions.startup import fire
    # the class extensions import (`modules.script_callbacks`) when they are loaded, else ours
    mod = sys.modules.get("modules.script_callbacks")
    if mod is None:
        try:
            from webui.extensions.compat.modules import script_callbacks as mod
        except ImportError:
            return
    fire("ui_train_tabs", mod.UiTrainTabParams(list(preview)))


def create_train_tab(svc: "Services", txt2img: Any = None) -> TrainTab:
    """A1111's Train tab: Create embedding, Create hypernetwork, Train, our Train LoRA, then the
    extensions' sub-tabs. `txt2img` (the txt2img tab's components) feeds "Read parameters from
    txt2img"."""
    preview = [txt2img.prompt, txt2img.neg_prompt, txt2img.steps, txt2img.sampler, txt2img.cfg_scale,
               txt2img.seed, txt2img.width, txt2img.height] if txt2img is not None else []
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Tabs(elem_id="train_tabs") as tabs:
                with gr.Tab("Create embedding", id="create_embedding"):
                    emb = build_create_embedding()
                with gr.Tab("Create hypernetwork", id="create_hypernetwork") as hn_tab:
                    hn = build_create_hypernetwork(svc, hn_tab)
                with gr.Tab("Train", id="train") as train_tab:
                    train = tr.build_train(svc)
                with gr.Tab("Train LoRA", id="train_lora") as lora_tab:
                    lora = tr.build_train_lora(svc)
                _extension_train_tabs(preview)
        with gr.Column(scale=2, elem_id="ti_gallery_container"):
            out = build_outputs()
            loss_plot = gr.LinePlot(tr.plot_value([]), x="step", y="loss", title="Loss", elem_id="ti_loss_plot",
                                    height=240)
    watch_id, shown = gr.State(""), gr.State("")
    timer = gr.Timer(1.0, active=False)
    wire_create_embedding(svc, emb, out)
    wire_create_hypernetwork(svc, hn, out)
    wire_train(svc, train, out, watch_id, shown, timer, preview)
    wire_train_lora(svc, lora, out, watch_id, shown, timer)
    train["tab"], lora["tab"] = train_tab, lora_tab
    for sub in (train_tab, lora_tab):  # a run started elsewhere (another page, the API) is followed too
        sub.select(lambda wid: tr.follow_active(svc, wid), [watch_id], [watch_id, shown, timer],
                   show_progress="hidden", api_visibility="private")
    timer.tick(tr.poll, [watch_id, shown], [out.progress, out.info, out.gallery, loss_plot, shown, timer],
               show_progress="hidden", api_visibility="private")
    # a new embedding / hypernetwork is offered for training at once
    if emb.created is not None:
        emb.created.then(lambda: gr.update(choices=svc.training.embedding_names() if svc.training else []), None,
                         train["embedding"], show_progress="hidden", api_visibility="private")
    if hn.created is not None:
        hn.created.then(lambda: gr.update(choices=svc.training.hypernetwork_names() if svc.training else []), None,
                        train["hypernetwork"], show_progress="hidden", api_visibility="private")
    return TrainTab(tabs, emb, hn, out, train, lora, loss_plot, timer)


__all__ = ["TrainTab", "TrainOutputs", "create_train_tab", "module_sizes"]
