"""Settings tab: one component per option of `svc.settings.options` (the built-in ones and those
extensions register), grouped by section; applied without a restart. A search box and a section
list filter them; Reload UI, Sysinfo and Licenses are beside them (webui.ui.settings_pages). The extension enable state
(`disabled_extensions`, `disable_all_extensions`) is left to the Extensions tab, as A1111 hides it:
that tab saves it only where extension access is allowed."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from webui.ui.admin_gate import admin_refusal
from webui.ui.common import checkpoint_titles, vae_choices
from webui.ui.extensions_tab import RELOADED

if TYPE_CHECKING:
    from webui.services.container import Services

log = logging.getLogger(__name__)


@dataclass
class SettingsTab:
    components: dict[str, Any]
    apply: gr.Button
    result: gr.Markdown
    apply_event: Any = None
    defaults: Any = None  # the Defaults page (webui.ui.defaults_page), connected once the page is built

    def values_for(self, svc: "Services") -> dict[Any, Any]:
        """Current option values for every component (used on page load and after Apply)."""
        opts = svc.options()
        out: dict[Any, Any] = {}
        for key, comp in self.components.items():
            v = opts.get(key)
            if key == "sd_model_checkpoint":
                out[comp] = gr.update(choices=checkpoint_titles(svc), value=v)
            elif key == "sd_vae":
                out[comp] = gr.update(choices=vae_choices(svc), value=v)
            else:
                out[comp] = _to_component_value(v)
        return out


# options the Extensions tab manages (A1111 keeps them out of Settings too)
HIDDEN_OPTIONS = frozenset({"disabled_extensions", "disable_all_extensions"})


def _to_component_value(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    return "" if v is None else v


def _same(a: Any, b: Any) -> bool:
    """Equal values, a list and a tuple of the same items included (multiselect options)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def option_component(key: str, info: Any, value: Any, svc: "Services", elem_id: str | None = None) -> Any:
    """The control an option gets (the Settings tab and the quicksettings row); `elem_id` defaults
    to A1111's `setting_<key>`."""
    elem_id = elem_id or f"setting_{key}"
    kind = info.component
    if key == "sd_model_checkpoint":  # `setting_sd_model_checkpoint` is the quicksettings dropdown's id
        return gr.Dropdown(checkpoint_titles(svc), value=value, label=info.label,
                           elem_id="settings_page_sd_model_checkpoint", allow_custom_value=True)
    if key == "sd_vae":  # files are listed as they are found (usable ones only); a typed name is allowed
        return gr.Dropdown(vae_choices(svc), value=value, label=info.label, elem_id=elem_id, allow_custom_value=True)
    if kind == "checkbox":
        return gr.Checkbox(value=bool(value), label=info.label, elem_id=elem_id)
    if kind == "slider" and info.minimum is not None and info.maximum is not None:
        return gr.Slider(info.minimum, info.maximum, value=value, step=info.step or 1, label=info.label,
                         elem_id=elem_id)
    if kind == "dropdown" and info.choices:
        return gr.Dropdown(list(info.choices), value=value, label=info.label, elem_id=elem_id)
    if kind == "radio" and info.choices:
        return gr.Radio(list(info.choices), value=value, label=info.label, elem_id=elem_id)
    if kind == "multiselect":
        chosen = [str(x) for x in (value or [])]
        choices = [str(x) for x in (info.choices or ())]
        return gr.Dropdown(choices + [x for x in chosen if x not in choices], value=chosen, label=info.label,
                           elem_id=elem_id, multiselect=True, allow_custom_value=not info.choices)
    if kind in ("number", "slider"):
        is_int = isinstance(info.default, int) and not isinstance(info.default, bool)
        return gr.Number(value=value, label=info.label, elem_id=elem_id, precision=0 if is_int else None,
                         minimum=info.minimum, maximum=info.maximum)
    return gr.Textbox(value=_to_component_value(value), label=info.label, elem_id=elem_id, lines=1)


def create_settings_tab(svc: "Services", in_row: Any = ()) -> SettingsTab:
    """`in_row`: the keys the quicksettings row shows; their controls here get `settings_page_<key>`
    ids, as the row's have A1111's `setting_<key>`."""
    options = svc.settings.options  # this app's table: extensions' options are in it
    opts = svc.options()
    sections: dict[str, list[str]] = {}
    for key, info in options.items():
        if key in HIDDEN_OPTIONS:
            continue
        sections.setdefault(info.section, []).append(key)

    from webui.ui import settings_pages as pages
    from webui.ui.defaults_page import DEFAULTS, create_defaults_page, follow_section_list

    components: dict[str, Any] = {}
    with gr.Row(elem_id="settings_top"):
        apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
        reload_ui = gr.Button("Reload UI", elem_id="settings_reload_ui")
    result = gr.Markdown("", elem_id="settings_result")
    search = gr.Textbox(placeholder="Search settings", show_label=False, max_lines=1, elem_id="settings_search")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=180, elem_id="settings_sidebar"):
            section_list = gr.Radio([pages.ALL_SECTIONS, *sections, DEFAULTS, pages.SYSINFO, pages.LICENSES],
                                    value=pages.ALL_SECTIONS, show_label=False, elem_id="settings_sections")
        with gr.Column(scale=5, elem_id="settings_pages"):
            for section, keys in sections.items():
                with gr.Group(elem_id=f"settings_section_{pages.section_slug(section)}"):
                    gr.Markdown(f"### {section}", elem_classes="settings-section-title", padding=True)
                    for key in keys:
                        elem = pages.page_elem_id(key, in_row)
                        if key == "sd_vae":  # A1111 has a refresh button beside the VAE list
                            with gr.Row(equal_height=False):
                                components[key] = option_component(key, options[key], opts.get(key), svc, elem)
                                refresh_vae = gr.Button("🔄", elem_id=pages.refresh_elem_id(elem), size="sm",
                                                        scale=0, min_width=44)
                            refresh_vae.click(lambda: gr.update(choices=vae_choices(svc)), None, components[key],
                                              show_progress="hidden", api_visibility="private")
                        else:
                            components[key] = option_component(key, options[key], opts.get(key), svc, elem)
            defaults_page = create_defaults_page(svc)  # Defaults: saved values of the page's controls
            with gr.Column(elem_id="settings_page_sysinfo"):
                gr.Markdown("System information for a bug report: platform, Python, torch and the GPU, "
                            "packages, extensions and settings (no environment variables; secrets hidden).")
                sysinfo_button = gr.Button("Download system info", elem_id="settings_sysinfo_download")
                sysinfo_out = gr.File(None, interactive=False, show_label=False, visible=False,
                                      elem_id="settings_sysinfo_file")
            with gr.Column(elem_id="settings_page_licenses"):
                gr.HTML(pages.licenses_html(), elem_id="settings_licenses")

    tab = SettingsTab(components, apply, result, defaults=defaults_page)
    # search and section list only show and hide what is on the page: no request
    js = pages.filter_js(pages.search_entries(options, list(components), in_row), sections, in_row)
    search.input(None, [search, section_list], None, js=js)
    search.change(None, [search, section_list], None, js=js)
    section_list.change(None, [search, section_list], None, js=js)
    follow_section_list(search, section_list)  # the Defaults page shows when chosen

    def download_sysinfo() -> Any:
        try:
            return gr.update(value=pages.sysinfo_file(svc), visible=True)
        except Exception as e:  # noqa: BLE001 - a report that fails must say why, not break the tab
            log.exception("sysinfo failed")
            gr.Warning(f"System info not written: {type(e).__name__}: {e}")
            return gr.update()

    sysinfo_button.click(download_sysinfo, None, sysinfo_out, show_progress="hidden", api_visibility="private")

    def do_reload(request: gr.Request) -> str:
        """A1111's Reload UI: the page is rebuilt in-process (extensions' scripts included)."""
        refused = admin_refusal(svc, request, "reload the UI")
        if refused:
            gr.Warning(refused, title="Not allowed")
            return f"**Error:** {refused}"
        reload = getattr(svc, "reload_ui", None)
        if reload is None:  # an app not run by the composition root (tests, tools)
            return "Reloading the UI needs the full server: restart it instead."
        try:
            return str(reload())
        except Exception as e:  # noqa: BLE001 - the page stays usable; the message says what to do
            log.exception("reloading the UI failed")
            return f"**Error:** reloading the UI failed ({type(e).__name__}: {e}); restart the server."

    # the page reloads itself once the new UI is served, as after the Extensions tab's Apply
    reload_ui.click(do_reload, None, result, api_visibility="private").then(
        None, [result], None,
        js=f"(t) => {{ if (t && t.includes({json.dumps(RELOADED)})) setTimeout(() => window.location.reload(), 800); }}")
    keys = list(components)

    def apply_settings(request: gr.Request, *values: Any) -> dict:
        from webui.services.container import ModelLoadError
        from webui.settings import SettingsError

        refused = admin_refusal(svc, request, "change settings")
        if refused:  # the page shows the values that stay
            gr.Warning(refused, title="Settings not applied")
            return {result: f"**Error:** {refused}"} | tab.values_for(svc)
        changes = page_changes(svc, dict(zip(keys, values)))
        if not changes:
            return {result: "Nothing changed."} | tab.values_for(svc)
        try:
            names = apply_changes(svc, changes)
        except (SettingsError, ModelLoadError) as e:
            gr.Warning(str(e), title="Settings not applied")
            return {result: f"**Error:** {e}"} | tab.values_for(svc)
        msg = f"{len(names)} setting{'s' if len(names) != 1 else ''} changed: " + ", ".join(names) + "."
        return {result: msg} | tab.values_for(svc)

    comps = [components[k] for k in keys]
    tab.apply_event = apply.click(apply_settings, comps, [result] + comps, api_visibility="private")
    return tab


# ---- applying values from the page (the Apply button and the quicksettings row share these)

def page_changes(svc: "Services", values: dict[str, Any]) -> dict[str, Any]:
    """The options whose value from the page differs from the current one, as the option stores it
    (an empty text box un-sets an option without default; a whole float is an int option's int)."""
    options = svc.settings.options
    current = svc.options()
    changes: dict[str, Any] = {}
    for key, v in values.items():
        info = options[key]
        if isinstance(v, str) and info.component == "textbox" and info.default is None and v == "":
            v = None
        if isinstance(v, float) and isinstance(info.default, int) and not isinstance(info.default, bool) \
                and v.is_integer():
            v = int(v)
        if not _same(v, current.get(key)) and not (v in ("", None) and current.get(key) in ("", None)):
            changes[key] = v
    return changes


def apply_changes(svc: "Services", changes: dict[str, Any]) -> list[str]:
    """Apply and save `changes`: every value is checked first (a bad one changes nothing), then a
    new checkpoint is loaded, then the rest is stored. Returns the changed options' labels; raises
    SettingsError or ModelLoadError."""
    options = svc.settings.options
    changes = dict(changes)
    ckpt = changes.pop("sd_model_checkpoint", None)
    for k, v in changes.items():
        svc.settings.coerce(k, v)
    if ckpt:
        svc.select_checkpoint(str(ckpt))
    svc.settings.update(changes)
    return ([options["sd_model_checkpoint"].label] if ckpt else []) + [options[k].label for k in changes]
