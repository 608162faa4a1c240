"""Extensions' JavaScript and CSS in the page, with the small script API A1111's own page offers them
(`gradioApp()`, `onUiLoaded`, `onUiUpdate`, `onAfterUiUpdate`, `onUiTabChange`, `get_uiCurrentTab`),
so their files run as they do in A1111."""
from __future__ import annotations

import html
import logging
from typing import Any

log = logging.getLogger(__name__)

A1111_SCRIPT_API = """
<script>
(function () {
  if (window.gradioApp) return;
  const callbacks = {loaded: [], update: [], afterUpdate: [], tabChange: []};
  window.gradioApp = function () {
    const el = document.getElementsByTagName('gradio-app');
    const app = el.length ? el[0] : document;
    return app.shadowRoot ? app.shadowRoot : app;
  };
  window.onUiLoaded = (cb) => callbacks.loaded.push(cb);
  window.onUiUpdate = (cb) => callbacks.update.push(cb);
  window.onAfterUiUpdate = (cb) => callbacks.afterUpdate.push(cb);
  window.onUiTabChange = (cb) => callbacks.tabChange.push(cb);
  window.get_uiCurrentTab = () => gradioApp().querySelector('#tabs > .tab-nav > button.selected');
  window.get_uiCurrentTabContent = () => gradioApp().querySelector('#tabs > .tabitem[id^=tab_]:not([style*="display: none"])');
  const run = (list, arg) => list.forEach((cb) => { try { cb(arg); } catch (e) { console.error('extension callback', e); } });
  let loaded = false, tab = null, timer = null;
  const observer = new MutationObserver((mutations) => {
    if (!loaded && gradioApp().querySelector('#txt2img_prompt')) { loaded = true; run(callbacks.loaded); }
    run(callbacks.update, mutations);
    clearTimeout(timer);
    timer = setTimeout(() => run(callbacks.afterUpdate), 200);
    const now = window.get_uiCurrentTab();
    if (now && now !== tab) { tab = now; run(callbacks.tabChange); }
  });
  const start = () => {
    observer.observe(gradioApp(), {childList: true, subtree: true});
    // the page may be complete already: then no mutation is left to announce it
    setTimeout(() => { if (!loaded && gradioApp().querySelector('#txt2img_prompt')) { loaded = true; run(callbacks.loaded); } }, 0);
  };
  // Gradio 6 adds head scripts after the document has loaded: DOMContentLoaded may be long gone
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
</script>
"""


def head_html(manager: Any) -> str:
    """The script API, then each enabled extension's javascript/*.js (classic, by name) and *.mjs (modules)."""
    parts = [A1111_SCRIPT_API]
    for ext in (manager.enabled() if manager is not None else []):
        for path in ext.javascript:
            try:
                code = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                ext.errors.append(f"javascript/{path.name} unreadable: {e}")
                continue
            kind = ' type="module"' if path.suffix == ".mjs" else ""
            # a closing tag in the file would end our <script> early
            code = code.replace("</script", "<\\/script")
            parts.append(f'<script{kind} data-extension="{html.escape(ext.name)}" '
                         f'data-file="{html.escape(path.name)}">\n{code}\n</script>')
    return "\n".join(parts)


def extension_css(manager: Any) -> str:
    out = []
    for ext in (manager.enabled() if manager is not None else []):
        if ext.stylesheet is not None:
            try:
                out.append(f"/* {ext.name} */\n" + ext.stylesheet.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as e:
                ext.errors.append(f"style.css unreadable: {e}")
    return "\n".join(out)
