"""The Settings tab's tools beside the option pages (A1111's ui_settings): the search box and the
section list (both filter in the browser, with no request), Reload UI, Sysinfo and Licenses."""
from __future__ import annotations

import datetime as _dt
import html
import importlib.metadata as md
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webui.services.container import Services

log = logging.getLogger(__name__)

ALL_SECTIONS = "All"
SYSINFO = "Sysinfo"
LICENSES = "Licenses"
# parts the app runs on beside the pyproject's list (installed without their declared deps)
EXTRA_PACKAGES = ("gradio_client", "spandrel", "huggingface_hub", "tokenizers", "starlette")
FALLBACK_PACKAGES = ("torch", "diffusers", "transformers", "safetensors", "gradio", "fastapi", "fastapi-offline",
                     "uvicorn", "pydantic", "pillow", "numpy", "opencv-python-headless", "torchsde", "accelerate",
                     "scipy", "psutil", "einops")


def section_slug(section: str) -> str:
    """The elem_id suffix of a section's group (settings_section_<slug>)."""
    return re.sub(r"[^a-z0-9_]+", "_", section.lower()).strip("_")


# ---------------------------------------------------------------- search and section list (browser only)

def page_elem_id(key: str, in_row: Any = ()) -> str:
    """The elem_id of an option's control in the Settings tab: A1111's `setting_<key>`, or
    `settings_page_<key>` where the quicksettings row shows the option (the row's has that id)."""
    return f"settings_page_{key}" if key == "sd_model_checkpoint" or key in in_row else f"setting_{key}"


def refresh_elem_id(elem_id: str) -> str:
    """The 🔄 beside a list in the Settings tab (the VAE's): `refresh_<key>` as in A1111."""
    return elem_id.replace("setting_", "refresh_", 1) if elem_id.startswith("setting_") \
        else elem_id.replace("settings_page_", "settings_page_refresh_", 1)


def filter_js(entries: dict[str, str], sections: dict[str, list[str]], in_row: Any = ()) -> str:
    """A JS function (query, section) that shows the settings whose label or key contains the query
    (every section while searching, as A1111 does) or, without a query, the chosen section; the
    Sysinfo and Licenses pages show on their own."""
    by_section = {section_slug(s): [page_elem_id(k, in_row) for k in keys] for s, keys in sections.items()}
    refresh = {page_elem_id("sd_vae", in_row): refresh_elem_id(page_elem_id("sd_vae", in_row))}
    names = {section_slug(s): s for s in sections}
    return """
(query, section) => {
  const entries = %s, bySection = %s, names = %s, refresh = %s;
  // the page's own values: the event's arguments can lag one keystroke behind
  const box = document.querySelector('#settings_search input, #settings_search textarea');
  const picked = document.querySelector('#settings_sections input:checked');
  if (box) query = box.value;
  if (picked) section = picked.value;
  const q = (query || '').trim().toLowerCase();
  const pages = {'%s': 'settings_page_sysinfo', '%s': 'settings_page_licenses'};
  const show = (id, on) => { const e = document.getElementById(id); if (e) e.style.display = on ? '' : 'none'; };
  for (const [s, id] of Object.entries(pages)) {  // hidden by the stylesheet until chosen
    const e = document.getElementById(id); if (e) e.style.display = !q && section === s ? 'flex' : 'none';
  }
  const special = !q && section in pages;
  for (const [slug, ids] of Object.entries(bySection)) {
    let any = false;
    for (const id of ids) {
      const on = !special && (q ? (entries[id] || '').includes(q) : (section === '%s' || names[slug] === section));
      show(id, on);
      if (refresh[id]) show(refresh[id], on);
      any = any || on;
    }
    show('settings_section_' + slug, any);
  }
  return [];
}
""" % (json.dumps(entries), json.dumps(by_section), json.dumps(names), json.dumps(refresh), SYSINFO, LICENSES,
       ALL_SECTIONS)


def search_entries(options: dict[str, Any], keys: list[str], in_row: Any = ()) -> dict[str, str]:
    """elem_id → the lowercase text a search matches (label and key)."""
    out = {}
    for key in keys:
        out[page_elem_id(key, in_row)] = f"{options[key].label} {key}".lower()
    return out


# ---------------------------------------------------------------- Sysinfo

def sysinfo_data(svc: "Services") -> dict[str, Any]:
    """The same report as GET /internal/sysinfo (A1111's keys, no environment, secrets hidden)."""
    from webui.api.system_routes import sysinfo
    return sysinfo(svc)


def sysinfo_file(svc: "Services") -> str:
    """The report as a JSON file to download (sysinfo-<date>.json as A1111 names it)."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d-%H-%M")
    path = Path(tempfile.mkdtemp(prefix="webui-sysinfo-")) / f"sysinfo-{stamp}.json"
    path.write_text(json.dumps(sysinfo_data(svc), indent=4, ensure_ascii=False, default=str), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- Licenses

def main_packages(pyproject: Path | None = None) -> list[str]:
    """The project's declared dependencies (pyproject.toml when run from a checkout) and the few
    parts installed beside them."""
    names: list[str] = []
    path = pyproject or Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        import tomllib
        deps = tomllib.loads(path.read_text(encoding="utf-8"))["project"]["dependencies"]
        names = [re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].strip() for d in deps]
    except (OSError, KeyError, ValueError, ImportError):
        names = list(FALLBACK_PACKAGES)
    return list(dict.fromkeys(n for n in [*names, *EXTRA_PACKAGES] if n))


def license_name(meta: Any) -> str:
    """A package's license as its metadata states it: the SPDX expression, else the License field's
    first line, else the classifiers."""
    expr = (meta.get("License-Expression") or "").strip()
    if expr:
        return expr
    text = (meta.get("License") or "").strip()
    if text and len(text) <= 80 and "\n" not in text:
        return text
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return ", ".join(classifiers)
    return text.splitlines()[0][:80] if text else "unknown"


def licenses(packages: list[str] | None = None) -> list[dict[str, str]]:
    """Name, version, license and home page of each installed main package (missing ones skipped)."""
    out = []
    for name in packages or main_packages():
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        meta = dist.metadata
        home = meta.get("Home-page") or ""
        for entry in meta.get_all("Project-URL") or []:
            label, _, url = entry.partition(",")
            if not home and label.strip().lower() in ("homepage", "home", "source", "repository"):
                home = url.strip()
        out.append({"name": meta.get("Name") or name, "version": dist.version, "license": license_name(meta),
                    "url": home})
    return out


def licenses_html(rows: list[dict[str, str]] | None = None) -> str:
    rows = licenses() if rows is None else rows
    body = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(r['version'])}</td>"
        f"<td>{html.escape(r['license'])}</td><td>"
        + (f"<a href='{html.escape(r['url'])}' target='_blank' rel='noreferrer'>{html.escape(r['url'])}</a>"
           if r["url"].startswith(("http://", "https://")) else "")
        + "</td></tr>" for r in rows)
    return ("<p>The parts this web UI runs on, with the licenses their installed packages declare. Model files "
            "you add come with licenses of their own.</p>"
            "<table class='licenses'><thead><tr><th>Package</th><th>Version</th><th>License</th><th>Project</th>"
            f"</tr></thead><tbody>{body}</tbody></table>")
