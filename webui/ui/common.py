"""Small helpers shared by the UI tabs: sampler lists, token counting, checkpoint listing.

Nothing here imports torch at module level; heavy modules are imported inside functions.
"""
from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webui.services.container import Services

# A1111's UI order (reference notes §1.3); used only if webui.engine.samplers cannot be imported.
_FALLBACK_SAMPLERS = (
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
    "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM",
)
_FALLBACK_SCHEDULES = (
    ("automatic", "Automatic"), ("uniform", "Uniform"), ("karras", "Karras"), ("exponential", "Exponential"),
    ("polyexponential", "Polyexponential"), ("sgm_uniform", "SGM Uniform"), ("kl_optimal", "KL Optimal"),
    ("align_your_steps", "Align Your Steps"), ("simple", "Simple"), ("normal", "Normal"), ("ddim", "DDIM"),
    ("beta", "Beta"),
)
DEFAULT_SAMPLER = "DPM++ 2M"
AUTOMATIC = "Automatic"


def _iter(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return list(obj.values())
    return list(obj or ())


def sampler_names() -> list[str]:
    try:
        from webui.engine.samplers import SAMPLERS
        names = [str(s.name) for s in _iter(SAMPLERS) if not getattr(s, "hidden", False)]
    except Exception:  # module not available (yet): A1111's list
        names = []
    return names or list(_FALLBACK_SAMPLERS)


def _schedule_pairs() -> list[tuple[str, str]]:
    """(name, label) of every schedule type, "Automatic" first."""
    pairs: list[tuple[str, str]] = []
    try:
        from webui.engine.samplers import SCHEDULE_TYPES
        for s in _iter(SCHEDULE_TYPES):
            label = str(getattr(s, "label", None) or getattr(s, "name", ""))
            name = str(getattr(s, "name", None) or label)
            if label:
                pairs.append((name, label))
    except Exception:
        pairs = []
    if not pairs:
        pairs = list(_FALLBACK_SCHEDULES)
    if not any(label == AUTOMATIC for _, label in pairs):
        pairs.insert(0, ("automatic", AUTOMATIC))
    else:  # make sure it is first, like A1111's dropdown
        pairs.sort(key=lambda p: p[1] != AUTOMATIC)
    return pairs


def schedule_labels() -> list[str]:
    return [label for _, label in _schedule_pairs()]


def schedule_label_to_name(label: str | None) -> str | None:
    """UI label → request `scheduler` value ("Automatic" → "automatic")."""
    if not label:
        return None
    for name, lab in _schedule_pairs():
        if lab == label or name == label:
            return name
    return label


def schedule_name_to_label(name: str | None) -> str:
    if not name:
        return AUTOMATIC
    low = str(name).lower()
    for n, lab in _schedule_pairs():
        if n.lower() == low or lab.lower() == low:
            return lab
    return AUTOMATIC


def upscaler_names(svc: "Services | None" = None) -> list[str]:
    """Hires fix upscalers: latent modes, then the image upscalers (model files when svc is given)."""
    from webui.services.requests import IMAGE_UPSCALERS, LATENT_UPSCALE_MODES
    images = svc.txt2img.image_upscalers() if svc is not None else list(IMAGE_UPSCALERS)
    return list(LATENT_UPSCALE_MODES) + images


# ---------------------------------------------------------------- tokens

_tok_lock = threading.Lock()
_fallback_tokenizer: list[Any] = []


def _fallback_clip_tokenizer() -> Any:
    with _tok_lock:
        if not _fallback_tokenizer:
            from webui.models.tokenizers import load_clip_tokenizer
            _fallback_tokenizer.append(load_clip_tokenizer(True))
        return _fallback_tokenizer[0]


def token_counter_text(svc: "Services", text: str | None, steps: int = 20, is_positive: bool = True,
                       styles: list[str] | None = None) -> str:
    """A1111's "N/75" (capacity grows by 75 per chunk; the longest scheduled variant counts).
    Extensions' before_token_counter callbacks see (and may change) what is counted, as in A1111."""
    from webui.extensions.startup import fire
    from webui.processing.callbacks import BeforeTokenCounterParams
    from webui.prompts.conditioning import count_prompt_tokens
    params = BeforeTokenCounterParams(text or "", steps, list(styles or []), is_positive)
    fire("before_token_counter", params)
    text, steps, is_positive = params.prompt, params.steps, params.is_positive
    styles_db = getattr(svc, "styles", None)
    if params.styles and styles_db is not None and svc.settings.get("include_styles_into_token_counters"):
        # A1111's include_styles_into_token_counters: count the prompt as the enabled styles make it
        apply = styles_db.apply_styles_to_prompt if is_positive else styles_db.apply_negative_styles_to_prompt
        text = apply(text or "", params.styles)
    tokenizer = None
    cur = svc.models.current
    if cur is not None:
        toks = getattr(cur.sd, "tokenizers", None) or []
        tokenizer = toks[0] if toks else None
    if tokenizer is None:
        tokenizer = _fallback_clip_tokenizer()
    with _tok_lock:  # the slow tokenizer keeps a cache dict: do not share it between threads
        used, capacity = count_prompt_tokens(tokenizer, text or "", steps, is_positive=is_positive,
                                             embeddings=getattr(getattr(cur, "encoder", None), "embeddings", None))
    return f"{used}/{capacity}"


def token_counter_html(text: str) -> str:
    return f"<span class='token-count'>{html.escape(text)}</span>"


# ---------------------------------------------------------------- checkpoints

def checkpoint_titles(svc: "Services") -> list[str]:
    return [c.title for c in svc.registry.list()]


def current_checkpoint_title(svc: "Services") -> str | None:
    cur = svc.models.current
    if cur is not None:
        return cur.info.title
    wanted = svc.settings.get("sd_model_checkpoint")
    if wanted:
        try:
            return svc.registry.get(str(wanted)).title
        except KeyError:
            return None
    return None


def vae_choices(svc: "Services") -> list[str]:
    """A1111's SD VAE dropdown: Automatic, None, then the usable VAE files by name."""
    return ["Automatic", "None"] + [e["model_name"] for e in svc.models.vae_listing() if "error" not in e]


def checkpoint_status_md(svc: "Services", message: str = "") -> str:
    """Markdown under the quicksettings: loading state, errors, unusable files with reasons."""
    lines: list[str] = []
    if message:
        lines.append(message)
    loading = getattr(svc.models, "loading", None)
    if loading:
        lines.append(f"⏳ Loading `{loading}`…")
    elif svc.models.current is None:
        if not svc.registry.list():
            lines.append(f"No checkpoint found in `{svc.paths.ckpt_dir}`: put a .safetensors file there "
                         "and press 🔄.")
        elif getattr(svc.executor, "shared", False):  # scale-out: the workers hold the checkpoints
            d = svc.executor.describe()
            lines.append(f"Generations run on Ray workers: {d.get('replicas_running', 0)} of {d.get('capacity')} "
                         "running" + (f" ({d['failure']})" if d.get("failure") else "") + ".")
        else:
            lines.append("No checkpoint loaded yet (the first generation loads one).")
    cur = svc.models.current
    if cur is not None and not loading and is_builtin(svc, cur.info.path):
        meta = getattr(cur.sd, "metadata", {}) or {}
        hint = meta.get("modelspec.usage_hint", "")
        lines.append(f"ℹ️ **{md_escape(meta.get('modelspec.title', cur.info.model_name))}**: a small demonstration "
                     f"model that draws coloured shapes only{f': *{md_escape(hint)}*' if hint else ''}. "
                     f"For real pictures put a checkpoint in `{md_escape(svc.paths.ckpt_dir)}` and press 🔄.")
    bad = svc.models.unusable_files()
    if bad:
        items = "; ".join(f"`{md_escape(name)}` ({kind}): {md_escape(reason)}" for kind, name, reason in bad)
        lines.append(f"Unusable: {items}")
    return "  \n".join(lines)


def is_builtin(svc: "Services", path: Any) -> bool:
    """Whether ``path`` is one of the models shipped inside the package."""
    from pathlib import Path

    target = Path(path).resolve()
    return any(Path(p).resolve() == target for p in svc.registry.builtin)


def md_escape(text: str) -> str:
    return html.escape(str(text))


def upload_components() -> tuple[type, type]:
    """(Image, ImageEditor) whose broken uploads reach our decoder — which names the problem (not an
    image, truncated, over the size limit) — instead of failing in Gradio's preprocessing with a
    generic error. They render as Gradio's own components (``is_template``)."""
    import gradio as gr

    class UploadImage(gr.Image):
        is_template = True

        def preprocess(self, payload: Any) -> Any:
            try:
                return super().preprocess(payload)
            except Exception:  # handed on as a path; webui.imaging.decode reports what is wrong
                return str(payload.path) if payload is not None and getattr(payload, "path", None) else None

    class UploadEditor(gr.ImageEditor):
        is_template = True

        def preprocess(self, payload: Any) -> Any:
            try:
                return super().preprocess(payload)
            except Exception:
                bg = getattr(getattr(payload, "background", None), "path", None)
                return {"background": bg, "layers": [], "composite": bg} if bg else None

    return UploadImage, UploadEditor
