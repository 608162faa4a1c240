"""UI localization and light/dark mode, as A1111 1.10 does them.

Localization files are JSON objects mapping an English UI string to its translation, found in
`webui/localizations/` (shipped with the app), `<data-dir>/localizations/` and every enabled
extension's `localizations/`. A file's name without `.json` names the localization (spaces dropped,
"(" → "_", ")" dropped, as A1111); files of one name are merged in that order, so a later file's
entry wins (A1111 loads the data-dir file first, then the extensions'). The option `localization`
picks one; the page gets its mapping as `window.localization` plus a script that translates exact
text matches in the page as it renders, leaving user content (prompts, infotexts, file names) alone.

The page's light/dark mode: `--theme light|dark` (A1111's flag), else the option `theme_mode`
("system" follows the browser). An explicit `?__theme=` in the address wins, as in A1111.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from webui.services.container import Services

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "localizations"
NONE = "None"
THEME_MODES = ("system", "light", "dark")


def localization_name(path: Path) -> str:
    """A1111's name for a localization file: the stem without spaces, "(" → "_", ")" dropped."""
    return path.stem.replace(" ", "").replace("(", "_").replace(")", "")


def read_file(path: Path) -> dict[str, Any] | None:
    """The file's mapping: string values, plus A1111's `"rtl": true`; None (logged) when the file
    is unreadable or not a JSON object, so one bad file never stops the app."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        _skip(path, str(e))
        return None
    if not isinstance(data, dict):
        _skip(path, 'not a JSON object of "English": "translation"')
        return None
    # an empty translation (an unfilled template entry) leaves the English text
    out: dict[str, Any] = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str) and v}
    if data.get("rtl") is True:
        out["rtl"] = True
    return out


_reported: set[tuple[str, float]] = set()  # (file, mtime): the files are read again for every page head


def _skip(path: Path, why: str) -> None:
    try:
        key = (str(path), path.stat().st_mtime)
    except OSError:
        key = (str(path), 0.0)
    if key not in _reported:
        _reported.add(key)
        log.warning("localization file %s skipped: %s", path, why)


def discover(folders: Iterable[Path]) -> dict[str, list[Path]]:
    """Each localization name → its files, in the order given (built-in, data dir, extensions);
    unreadable files are logged and left out."""
    found: dict[str, list[Path]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            if path.suffix.lower() != ".json" or not path.is_file():
                continue
            if read_file(path) is None:
                continue
            found.setdefault(localization_name(path), []).append(path)
    return found


def load_mapping(files: Iterable[Path]) -> dict[str, Any]:
    """The merged mapping of a localization's files; a later file's entry wins."""
    merged: dict[str, Any] = {}
    for path in files:
        merged.update(read_file(path) or {})
    return merged


def folders(svc: "Services") -> list[Path]:
    """Where localization files are looked for, lowest precedence first."""
    out = [BUILTIN_DIR, svc.paths.data_dir / "localizations"]
    manager = getattr(svc, "extensions", None)
    for ext in (manager.enabled() if manager is not None else []):
        out.append(Path(ext.path) / "localizations")
    return out


def available(svc: "Services") -> dict[str, list[Path]]:
    return discover(folders(svc))


def register_option(svc: "Services") -> list[str]:
    """Give the `localization` option the names found as its choices (the Settings dropdown and
    the check of `POST /options`). A chosen name whose files are gone stays chosen (an extension
    may be disabled for a while) and only shows English; it is logged."""
    from webui.settings import OPTIONS, OptionInfo

    names = sorted(available(svc))
    current = str(svc.settings.get("localization") or NONE)
    if current != NONE and current not in names:
        log.warning("localization %r is chosen but no localizations/%s.json was found; the UI stays in English",
                    current, current)
        names.append(current)
    base = svc.settings.options.get("localization") or OPTIONS["localization"]
    svc.settings.register_option("localization", OptionInfo(
        NONE, base.label, base.section, "dropdown", choices=(NONE, *names)))
    return names


def _script_json(value: Any) -> str:
    """JSON that is safe inside an inline <script>: no `</script>`, `<!--` or `&` can close or
    change it, whatever a translation file holds."""
    text = json.dumps(value, ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


# User content is never translated, even where it equals a UI string (A1111 keeps the same kinds of
# elements out). Textareas (prompts, statuses) are skipped by tag. Everything inside these:
_USER_BLOCKS = ("#txt2img_info", "#img2img_info", "#extras_html_info", "#pnginfo_html", "#pnginfo_generation_info",
                "#txt2img_gallery", "#img2img_gallery", "#extras_gallery", "#sd_checkpoint_status",
                "#modelmerger_result", "#extensions_installed_table", "#extensions_available_table",
                "#extensions_errors", ".extra-network-cards", "[id$='_cards']")
# ... and the choices (not the label) of these lists of names: models, VAEs, styles, upscalers
_NAME_LISTS = ("#setting_sd_model_checkpoint", "#settings_page_sd_model_checkpoint", "#setting_sd_vae",
               "#modelmerger_primary_model_name", "#modelmerger_secondary_model_name",
               "#modelmerger_tertiary_model_name", "#txt2img_styles", "#img2img_styles", "#extras_upscaler_1",
               "#extras_upscaler_2", "#txt2img_hr_upscaler", "#img2img_hr_upscaler",
               "[id*='_controlnet_unit_'][id$='_model']")
USER_CONTENT = ", ".join([*_USER_BLOCKS, *(f"{n} [role=listbox]" for n in _NAME_LISTS),
                          *(f"{n} label:has(input[type=radio])" for n in _NAME_LISTS)])

TRANSLATOR_JS = """
(function () {
  const map = window.localization;
  if (!map || typeof map !== 'object' || !Object.keys(map).length) return;
  if (map.rtl === true) document.documentElement.setAttribute('dir', 'rtl');
  const SKIP = %(skip)s;
  const NUMBER = /^[\\d.]+$/;
  const EMOJI = /\\p{Extended_Pictographic}/u;
  // translations already made: a node whose text is one of them is not looked up again, so a
  // chain of entries (A -> B, B -> A) cannot make the observer loop
  const made = new Set();
  const lookup = (text) => {
    const key = text.trim();
    if (!key || made.has(key) || NUMBER.test(key) || EMOJI.test(key)) return undefined;
    const out = map[key];
    if (typeof out !== 'string') return undefined;
    made.add(out.trim());
    return out;
  };
  const userContent = (el) => !el || (el.closest && el.closest(SKIP) !== null);
  const text = (node) => {
    const parent = node.parentElement;
    if (!parent || /^(SCRIPT|STYLE|TEXTAREA)$/.test(parent.nodeName) || userContent(parent)) return;
    const old = node.nodeValue;
    const out = lookup(old);
    if (out === undefined) return;
    const start = old.length - old.trimStart().length, end = old.trimEnd().length;
    node.nodeValue = old.slice(0, start) + out + old.slice(end);  // keep the spacing around it
  };
  const attrs = (el) => {
    if (userContent(el)) return;
    for (const name of ['title', 'placeholder']) {
      const v = el.getAttribute(name);
      const out = v ? lookup(v) : undefined;
      if (out !== undefined) el.setAttribute(name, out);
    }
  };
  const walk = (root) => {
    if (root.nodeType === Node.TEXT_NODE) return text(root);
    if (root.nodeType !== Node.ELEMENT_NODE) return;
    attrs(root);
    const it = document.createTreeWalker(root, NodeFilter.SHOW_TEXT | NodeFilter.SHOW_ELEMENT);
    for (let n = it.nextNode(); n; n = it.nextNode()) {
      if (n.nodeType === Node.TEXT_NODE) text(n); else attrs(n);
    }
  };
  // the app renders after this script runs and re-renders parts on every update: translate each
  // added node, each changed text (Svelte rewrites text nodes in place) and each changed attribute
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      if (m.type === 'childList') m.addedNodes.forEach(walk);
      else if (m.type === 'characterData') text(m.target);
      else if (m.type === 'attributes') attrs(m.target);
    }
  }).observe(document.body, {childList: true, subtree: true, characterData: true,
                              attributes: true, attributeFilter: ['title', 'placeholder']});
  walk(document.body);
})();
"""

THEME_JS = """
(function () {
  const url = new URL(window.location.href);
  let mode = url.searchParams.get('__theme');
  if (mode !== 'light' && mode !== 'dark') {
    mode = %(mode)s;
    url.searchParams.set('__theme', mode);
    // as A1111's reload to ?__theme=..., without loading the page twice; a reload keeps the mode
    history.replaceState(history.state, '', url);
  }
  const apply = () => {
    if (document.body.classList.contains('dark') !== (mode === 'dark')) document.body.classList.toggle('dark', mode === 'dark');
  };
  apply();
  // Gradio chose the mode before this script ran and follows the system's preference later on
  new MutationObserver(apply).observe(document.body, {attributes: true, attributeFilter: ['class']});
})();
"""


def theme_mode(svc: "Services", option: str | None = None) -> str:
    """The page's mode: the --theme flag wins over the option; "system" leaves it to the browser."""
    flag = getattr(svc.args, "theme", None)
    if flag in ("light", "dark"):
        return flag
    value = option if option is not None else svc.settings.get("theme_mode")
    return value if value in THEME_MODES else "system"


def head_html(svc: "Services", *, localization: str | None = None, theme: str | None = None) -> str:
    """The page-head part for the chosen localization and mode (arguments override the options:
    change listeners run before the new value is stored)."""
    parts = []
    mode = theme_mode(svc, theme)
    if mode != "system":
        parts.append("<script>" + THEME_JS % {"mode": _script_json(mode)} + "</script>")
    name = str(localization if localization is not None else (svc.settings.get("localization") or NONE))
    mapping = load_mapping(available(svc).get(name, [])) if name != NONE else {}
    # always defined, as in A1111: extensions' scripts read window.localization
    parts.append(f"<script>window.localization = {_script_json(mapping)};</script>")
    if mapping:
        parts.append("<script>" + TRANSLATOR_JS % {"skip": _script_json(USER_CONTENT)} + "</script>")
    return "\n".join(parts)
