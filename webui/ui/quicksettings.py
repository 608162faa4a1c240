"""The row at the top of the page (A1111's `quicksettings_list`) and the order and visibility of the
tabs (`ui_tab_order`, `hidden_tabs`). All three are read when the page is built, so a change takes
effect after Reload UI, as in A1111.

The checkpoint dropdown, its 🔄 and the status line are built here but wired in `webui.ui.main`
(loading, errors and the Width/Height follow live there). Every other listed option gets the same
control as in the Settings tab, with element id `setting_<key>`; a change is applied and saved at
once through the Settings tab's own validation (`webui.ui.settings_tab.apply_changes`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import gradio as gr

from webui.settings import OPTIONS, OptionInfo
from webui.ui.admin_gate import admin_refusal
from webui.ui.common import checkpoint_status_md, checkpoint_titles, current_checkpoint_title, vae_choices
from webui.ui.settings_tab import HIDDEN_OPTIONS, SettingsTab, apply_changes, option_component, page_changes

if TYPE_CHECKING:
    from webui.services.container import Services

log = logging.getLogger(__name__)

CHECKPOINT = "sd_model_checkpoint"
# hiding Settings would leave no way to show the tabs again from the page
ALWAYS_SHOWN_TABS = frozenset({"Settings"})
CONTROL_MIN_WIDTH = 200


@dataclass
class QuickSettingsRow:
    """The row's components: the checkpoint trio (always built; hidden when the checkpoint is not
    listed) and one control per other listed option, in the list's order."""
    checkpoint: gr.Dropdown
    refresh: gr.Button
    status: gr.Markdown
    controls: dict[str, Any] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        """The option keys shown in the row (the checkpoint included when listed)."""
        return ([CHECKPOINT] if self.checkpoint.visible else []) + list(self.controls)


# ---------------------------------------------------------------- options

def register_options(svc: "Services") -> None:
    """`quicksettings_list` offers every option registered now (extensions' included)."""
    keys = tuple(k for k in svc.settings.options if k not in HIDDEN_OPTIONS)
    base = svc.settings.options.get("quicksettings_list") or OPTIONS["quicksettings_list"]
    svc.settings.register_option("quicksettings_list", _with_choices(base, keys))


def _with_choices(info: OptionInfo, choices: tuple[str, ...]) -> OptionInfo:
    return OptionInfo(info.default, info.label, info.section, info.component, choices=choices)


def row_keys(svc: "Services") -> list[str]:
    """The listed keys that are known options, in the list's order, each once (a key of an
    extension that is not loaded now is left out, and kept in the list)."""
    listed = svc.settings.get("quicksettings_list") or []
    out: list[str] = []
    for key in listed if isinstance(listed, (list, tuple)) else [listed]:
        key = str(key)
        if key in svc.settings.options and key not in HIDDEN_OPTIONS and key not in out:
            out.append(key)
    return out


# ---------------------------------------------------------------- the row

def build_row(svc: "Services") -> QuickSettingsRow:
    """The quicksettings row; call inside the page's Blocks, before the tabs."""
    register_options(svc)
    keys = row_keys(svc)
    options = svc.settings.options
    opts = svc.options()
    controls: dict[str, Any] = {}
    checkpoint = refresh = None
    with gr.Row(elem_id="quicksettings", equal_height=False):
        for key in keys or [CHECKPOINT]:
            if key == CHECKPOINT:
                titles = checkpoint_titles(svc)
                cur = current_checkpoint_title(svc)
                checkpoint = gr.Dropdown(titles, value=cur if cur in titles else None,
                                         label=options[CHECKPOINT].label, elem_id="setting_sd_model_checkpoint",
                                         scale=0, min_width=360, visible=CHECKPOINT in keys)
                refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", size="sm", scale=0, min_width=44,
                                    visible=CHECKPOINT in keys)
                continue
            controls[key] = _row_control(svc, key, options[key], opts.get(key))
        if checkpoint is None:  # the checkpoint is not listed: its events still need the components
            checkpoint = gr.Dropdown([], value=None, label=options[CHECKPOINT].label,
                                     elem_id="setting_sd_model_checkpoint", visible=False)
            refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", visible=False)
        status = gr.Markdown(checkpoint_status_md(svc), elem_id="sd_checkpoint_status", scale=1, min_width=240)
    return QuickSettingsRow(checkpoint, refresh, status, controls)


def row_label(label: str) -> str:
    """The row shows a label's name without its explanation in brackets (the Settings tab has it)."""
    short = label.split(" (", 1)[0].strip()
    return short or label


def _row_control(svc: "Services", key: str, info: OptionInfo, value: Any) -> Any:
    # a column of its own: Gradio stacks neighbouring form controls of a row into one box
    with gr.Column(scale=0, min_width=CONTROL_MIN_WIDTH, elem_classes="quicksettings-item"):
        comp = option_component(key, info, value, svc)
    comp.label = row_label(info.label)
    if isinstance(comp, gr.Number):
        # the range is checked by the option itself: Gradio's own check would raise before the
        # handler and leave the bad number in the box
        comp.minimum = comp.maximum = None
    if key == "sd_vae":  # A1111 puts a refresh beside the VAE list wherever it is shown
        button = gr.Button("🔄", elem_id="refresh_sd_vae", size="sm", scale=0, min_width=44)
        button.click(lambda: gr.update(choices=vae_choices(svc)), None, comp, show_progress="hidden",
                     api_visibility="private")
    return comp


def _shown_value(svc: "Services", key: str, value: Any) -> Any:
    if key == "sd_vae":
        return gr.update(choices=vae_choices(svc), value=value)
    if isinstance(value, tuple):
        return list(value)
    return "" if value is None else value


def row_values(svc: "Services", row: QuickSettingsRow) -> dict[Any, Any]:
    """The current value of every row control (page load, after the Settings tab's Apply)."""
    opts = svc.options()
    return {comp: _shown_value(svc, key, opts.get(key)) for key, comp in row.controls.items()}


def apply_from_row(svc: "Services", key: str, value: Any) -> Any:
    """Apply one option changed in the row and save config.json; on a bad value warn and return
    the value kept (shown again in the control). Returns the option's value now."""
    from webui.services.container import ModelLoadError
    from webui.settings import SettingsError

    try:
        changes = page_changes(svc, {key: value})
        if changes:
            apply_changes(svc, changes)
    except (SettingsError, ModelLoadError) as e:
        reason = str(e).removeprefix(f"option {key}: ")
        gr.Warning(f"{row_label(svc.settings.options[key].label)}: {reason}; it stays {svc.options().get(key)!r}.",
                   title="Setting not applied")
    return svc.options().get(key)


def _triggers(comp: Any) -> list[Callable[..., Any]]:
    """A1111's events for a quicksetting: a text or number box on Enter and on leaving it, a slider
    when released, any other control on the user's change."""
    if isinstance(comp, (gr.Textbox, gr.Number)):
        return [comp.submit, comp.blur]
    if isinstance(comp, gr.Slider):
        return [comp.release]
    return [comp.input]


def connect_row(svc: "Services", demo: gr.Blocks, row: QuickSettingsRow, settings: SettingsTab) -> None:
    """Wire the row's controls (call inside the page's Blocks, after the Settings tab is built): a
    change is applied at once and shown in the Settings tab's own control; page load and the
    Settings tab's Apply show the current values in the row."""
    for key, comp in row.controls.items():
        copy = settings.components.get(key)
        outputs = [comp] + ([copy] if copy is not None else [])

        def changed(value: Any, request: gr.Request, key: str = key, both: bool = copy is not None) -> Any:
            refused = admin_refusal(svc, request, "change settings")
            if refused:  # the control shows the value that stays
                gr.Warning(refused, title="Setting not applied")
                now = _shown_value(svc, key, svc.options().get(key))
            else:
                now = _shown_value(svc, key, apply_from_row(svc, key, value))
            return (now, now) if both else now

        for trigger in _triggers(comp):
            trigger(changed, [comp], outputs, show_progress="hidden", api_visibility="private")
    if not row.controls:
        return
    comps = list(row.controls.values())
    demo.load(lambda: row_values(svc, row), None, comps, show_progress="hidden", api_visibility="private")
    if settings.apply_event is not None:
        settings.apply_event.then(lambda: row_values(svc, row), None, comps, show_progress="hidden",
                                  api_visibility="private")


# ---------------------------------------------------------------- tabs

def _label(tab: Any) -> str:
    return str(getattr(tab, "label", "") or "")


def arrange_tabs(svc: "Services", tabs: gr.Tabs, settings: SettingsTab | None = None) -> list[str]:
    """Put the `ui_tab_order` tabs first, in that order, and hide the `hidden_tabs` ones (never
    Settings); the Settings tab's two lists offer the tab names found. Call inside the page's
    Blocks, after the tabs are built. Returns the shown tab names in their new order."""
    names = [_label(t) for t in tabs.children]
    order = [str(n) for n in svc.settings.get("ui_tab_order") or []]
    hidden = {str(n) for n in svc.settings.get("hidden_tabs") or []} - ALWAYS_SHOWN_TABS
    rank = {name: i for i, name in enumerate(dict.fromkeys(order))}
    tabs.children.sort(key=lambda t: rank.get(_label(t), len(rank)))  # stable: the rest keep their order
    shown: list[str] = []
    for tab in tabs.children:
        if _label(tab) in hidden:
            tab.visible = False
        else:
            shown.append(_label(tab))
    visible_ids = [t.id for t in tabs.children if t.visible]
    if visible_ids and (order or tabs.selected not in visible_ids):  # the page opens on the first tab shown
        tabs.selected = visible_ids[0]
    for key in ("ui_tab_order", "hidden_tabs"):
        chosen = [str(n) for n in svc.settings.get(key) or []]
        choices = tuple(dict.fromkeys(names + chosen))  # a tab that is gone now stays chosen
        base = svc.settings.options.get(key) or OPTIONS[key]
        svc.settings.register_option(key, _with_choices(base, choices))
        comp = settings.components.get(key) if settings is not None else None
        if comp is not None:  # built before the tabs it lists existed
            comp.choices = [(n, n) for n in choices]
    return shown
