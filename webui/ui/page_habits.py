"""A1111's keyboard and button habits in the page: Ctrl+Up/Down weights and Alt+Left/Right tag moves
in the prompt boxes, "Generate forever" on Generate's right-click menu, "Interrupting..." and the
second-click hint on Interrupt, the progress in the window title and notification.mp3 when a
generation has made pictures.

The behaviour is JavaScript in `webui/ui/js/` (read once at import); this module gives it the few
option values it needs in a head script (rebuilt with the rest of the head when one of them changes,
see `webui.ui.main._follow_head_options`), and hooks the tabs' Generate events to it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import gradio as gr

from webui.ui.localization import _script_json as script_json

if TYPE_CHECKING:
    from webui.services.container import Services

log = logging.getLogger(__name__)

JS_DIR = Path(__file__).resolve().parent / "js"
# page_jobs.js first: the others listen to the generations it tracks
JS_FILES = ("page_jobs.js", "prompt_edit.js", "generate_forever.js")
# the options the page's scripts read (window.sdPageOptions)
PAGE_OPTIONS = ("keyedit_precision_attention", "keyedit_precision_extra", "keyedit_delimiters",
                "keyedit_delimiters_whitespace", "keyedit_move", "notification_audio", "notification_volume",
                "show_progress_in_title")
SOUND_FILE = "notification.mp3"  # in the data dir (A1111: in its install folder)
SOUND_URL = "notification.mp3"  # relative to the page, served by webui.api.page_routes
DONE_PREFIX = "Time taken"  # the status of a generation that showed pictures (webui.ui.txt2img)
INTERRUPT_NOTE = "Generation will stop after finishing this image, click again to stop immediately."

CSS = """
#context-menu { position: fixed; z-index: 10000; min-width: 180px; padding: 4px 0;
  background: var(--background-fill-primary); color: var(--body-text-color);
  border: 1px solid var(--border-color-primary); border-radius: 6px; box-shadow: 0 4px 14px rgba(0,0,0,0.25); }
#context-menu ul { list-style: none; margin: 0; padding: 0; }
#context-menu a { display: block; padding: 6px 14px; cursor: pointer; user-select: none; }
#context-menu a:hover { background: var(--background-fill-secondary); }
"""


def _read_scripts() -> str:
    parts = []
    for name in JS_FILES:
        # a closing tag in a file would end the inline <script> early
        parts.append((JS_DIR / name).read_text(encoding="utf-8").replace("</script", "<\\/script"))
    return "\n".join(parts)


SCRIPTS = _read_scripts()


def sound_path(svc: "Services") -> Path:
    return Path(svc.paths.data_dir) / SOUND_FILE


def page_options(svc: "Services", overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The values of PAGE_OPTIONS; `overrides` wins (change listeners run before a value is stored)."""
    overrides = overrides or {}
    return {key: overrides[key] if key in overrides else svc.settings.get(key) for key in PAGE_OPTIONS}


def head_html(svc: "Services", overrides: Mapping[str, Any] | None = None) -> str:
    """The option values, the sound's address only when the file is there and wanted (so the page
    never asks for a missing file), the menu's style and the scripts."""
    values = page_options(svc, overrides)
    sound = SOUND_URL if values.get("notification_audio") and sound_path(svc).is_file() else None
    return (f"<script>window.sdPageOptions = {script_json(values)};"
            f" window.sdPageSound = {script_json(sound)};</script>\n"
            f"<style>{CSS}</style>\n<script>\n{SCRIPTS}\n</script>")


def interrupt_clicked(svc: "Services", caller: Any = None, task_id: str | None = None) -> None:
    """Interrupt, with A1111's word after a first click that lets the current image finish
    (`interrupt_after_current` with several images); a second click stops at once (the job layer).
    The job is the running one for an admin (everyone without accounts, as A1111), else the page's
    own job (`task_id`) only: cancelled while it waits, interrupted while it runs."""
    from webui.ui.job_follow import page_job
    job = svc.queue.current_job if caller is None else page_job(svc, caller, task_id)
    if job is None:
        return
    state = job.state
    first = state.started is not None and not state.interrupted
    svc.queue.stop(job)
    if first and state.job_count > 1 and bool(svc.settings.get("interrupt_after_current")):
        gr.Info(INTERRUPT_NOTE)


def connect_generation_hooks(tabs: Mapping[str, Any]) -> None:
    """Tell the page's scripts when a tab's generation has ended (client-side only: no request; the
    start is the click on Generate, seen by the script itself). `tabs`: tab name ("txt2img",
    "img2img") → its Txt2ImgTab. Call inside the page's Blocks."""
    for name, tab in tabs.items():
        if tab.generate_event is None:
            continue
        # the status of the ended generation says whether it showed pictures (sound only then)
        done = (f"(status) => {{ window.sdPageJobs?.finished({script_json(name)}, "
                f"String(status || '').startsWith({script_json(DONE_PREFIX)})); return []; }}")
        tab.generate_event.then(None, [tab.status], None, js=done, queue=False, show_progress="hidden",
                                api_visibility="private")
