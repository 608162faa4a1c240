"""Pasting generation parameters into a generation tab (the ↙️ button, PNG Info's Send to): values
from a parsed infotext onto the tab's controls, and A1111's "Override settings" entries."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.ui.common import sampler_names, schedule_name_to_label

if TYPE_CHECKING:
    from webui.ui.txt2img import Txt2ImgTab


RADIO_LABELS = {"inpainting_mask_invert": ("Inpaint masked", "Inpaint not masked"),
                "inpainting_fill": ("fill", "original", "latent noise", "latent nothing"),
                "inpaint_full_res": ("Whole picture", "Only masked")}


def override_entries(overrides: dict[str, Any], options: dict[str, Any] | None = None) -> list[str]:
    """Settings named by an infotext, shown as A1111 shows them: "Clip skip: 2", "RNG: CPU",
    "Model hash: 6ce0161689" (A1111 `connect_paste.paste_settings`: f"{infotext name}: {value}").

    `overrides` comes from `infotext_to_request(..., current_options)`, which keeps only the settings
    whose pasted value differs from the current one (and the model only when its hash is not the
    loaded one). A key without an infotext name cannot be shown or read back, so it is left out."""
    if options is None:
        from webui.settings import OPTIONS as options
    out = []
    for key, value in overrides.items():
        info = options.get(key)
        label = getattr(info, "infotext", None)
        if label and value is not None:
            out.append(f"{label}: {value}")
    return out


def parse_override_entries(entries: list[str] | None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The selected "Override settings" entries → the request's override_settings (A1111
    `create_override_settings_dict`: "Name: value" split at the first ':', the value stripped and
    cast to the option's type; entries naming no option are ignored)."""
    from webui.infotext import cast_option_value
    if options is None:
        from webui.settings import OPTIONS as options
    by_label = {info.infotext: key for key, info in options.items() if getattr(info, "infotext", None)}
    out: dict[str, Any] = {}
    for entry in entries or []:
        label, sep, value = str(entry).partition(":")
        key = by_label.get(label.strip())
        if not sep or key is None:
            continue
        value = value.strip()
        try:
            out[key] = value if key == "sd_model_checkpoint" else cast_option_value(options[key].default, value)
        except (TypeError, ValueError):
            out[key] = value  # the generation reports the bad value with the option's name
    return out


def paste_values(tab: "Txt2ImgTab", req: dict[str, Any]) -> dict[Any, Any]:
    """Component updates for a request dict from `webui.infotext.infotext_to_request`."""
    fields = tab.paste_fields()
    out: dict[Any, Any] = {c: gr.update() for c in fields.values()}
    req = dict(req)
    if req.get("sampler_name"):
        try:  # A1111 shows "Automatic" when the pasted schedule is the sampler's own default
            from webui.engine.samplers import resolve_sampler
            s, sch = resolve_sampler(str(req["sampler_name"]), req.get("scheduler"), convert_automatic=True)
            req["sampler_name"], req["scheduler"] = s.name, sch.name
        except Exception:  # unknown sampler: reported below
            pass
    out[tab.extra] = gr.update()
    for key, comp in fields.items():
        if key not in req or req[key] is None:
            continue
        v = req[key]
        if key == "scheduler":
            v = schedule_name_to_label(str(v))
        elif key == "sampler_name":
            names = sampler_names()
            if v not in names:
                gr.Warning(f"Unknown sampler {v!r}; keeping the current one.")
                continue
        elif key == "hr_upscaler" and v not in [c[0] if isinstance(c, tuple) else c
                                                for c in (tab.hr_upscaler.choices or [])]:
            continue
        elif key in RADIO_LABELS:  # index-typed radios are set by their label
            labels = RADIO_LABELS[key]
            v = labels[int(v)] if not isinstance(v, bool) else labels[1 if v else 0]
        out[comp] = v
    if "enable_hr" not in req or tab.img2img is not None:
        out[tab.enable_hr] = False
    if tab.override is not None:  # the settings the infotext names apply to the next generation
        entries = override_entries(dict(req.get("override_settings") or {}))
        out[tab.override] = gr.update(choices=entries, value=entries, visible=bool(entries))
    if any(k in req and k in ("subseed_strength", "seed_resize_from_w", "seed_resize_from_h")
           and req[k] not in (None, 0, -1, 0.0) for k in req):
        out[tab.extra] = True
    for key in ("seed_resize_from_w", "seed_resize_from_h"):
        if key in req and (req[key] or 0) < 0:
            out[fields[key]] = 0
    return out


def apply_send_options(req: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    """A1111's send_seed / send_size: "Send to" leaves the target's seed or size alone when off."""
    if not opts.get("send_seed", True):
        for k in ("seed", "subseed", "subseed_strength"):
            req.pop(k, None)
    if not opts.get("send_size", True):
        req.pop("width", None)
        req.pop("height", None)
    return req


def infer_styles(svc: Any, params: dict[str, Any]) -> None:
    """A1111's infotext_styles: styles found at the end (or around `{prompt}`) of the pasted prompts are
    taken out of them ("Apply", "Discard", "Apply if any") and named in "Styles array" for the styles
    dropdown ("Apply": always, even none; "Apply if any": when some were found)."""
    mode = str(svc.settings.get("infotext_styles") or "Apply if any")
    db = getattr(svc, "styles", None)
    if mode == "Ignore" or db is None:
        return
    from webui.prompts.style_extraction import extract_styles
    found, prompt, negative = extract_styles(db.styles.values(), str(params.get("Prompt") or ""),
                                             str(params.get("Negative prompt") or ""))
    params["Prompt"], params["Negative prompt"] = prompt, negative
    if mode == "Apply" or (mode == "Apply if any" and found):
        params["Styles array"] = found


def parse_for_paste(svc: Any, text: str) -> dict[str, Any]:
    """An infotext parsed for pasting; extensions' `on_infotext_pasted` callbacks may change the
    parameters first (A1111). A1111's infotext_styles and infotext_skip_pasting options apply."""
    from webui.infotext import parse_generation_parameters
    params = parse_generation_parameters(text, skip_fields=[])
    infer_styles(svc, params)
    for key in svc.settings.get("infotext_skip_pasting") or ():
        params.pop(key, None)
    callbacks = getattr(getattr(svc, "pipeline", None), "callbacks", None)
    if callbacks is not None and callbacks.has("infotext_pasted"):
        from types import SimpleNamespace
        callbacks.run("infotext_pasted", SimpleNamespace(infotext=text, params=params))
    return params


def script_field_updates(fields: list[tuple[Any, Any]], params: dict[str, Any]) -> dict[Any, Any]:
    """Scripts' `infotext_fields`: each component gets the value its infotext key (or function) gives."""
    out: dict[Any, Any] = {}
    for comp, key in fields:
        try:
            value = key(params) if callable(key) else params.get(key)
        except Exception:  # noqa: BLE001 - an extension's reader must not break pasting
            continue
        if value is not None:
            out[comp] = gr.update(value=value)
    return out
