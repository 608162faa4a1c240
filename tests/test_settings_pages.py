"""Settings tools without a browser: the license list from package metadata and the search index."""
from __future__ import annotations

from email.message import Message
from pathlib import Path

from webui.settings import OPTIONS
from webui.ui import settings_pages as sp


def meta(**fields: str | list[str]) -> Message:
    m = Message()
    for k, v in fields.items():
        for item in v if isinstance(v, list) else [v]:
            m[k.replace("_", "-")] = item
    return m


def test_license_name_prefers_spdx_then_short_text_then_classifiers() -> None:
    assert sp.license_name(meta(License_Expression="MIT", License="long text")) == "MIT"
    assert sp.license_name(meta(License="BSD-3-Clause")) == "BSD-3-Clause"
    assert sp.license_name(meta(License="Copyright (c) someone\n\nfull text " * 20,
                                Classifier=["License :: OSI Approved :: Apache Software License"])) \
        == "Apache Software License"
    assert sp.license_name(meta()) == "unknown"


def test_main_packages_follow_the_pyproject(tmp_path: Path) -> None:
    names = sp.main_packages()
    assert names[:3] == ["torch", "diffusers", "transformers"] and "gradio" in names and "spandrel" in names
    assert len(names) == len(set(names))
    assert sp.main_packages(tmp_path / "missing.toml")[:2] == ["torch", "diffusers"]  # outside a checkout


def test_licenses_of_installed_packages() -> None:
    rows = {r["name"].lower(): r for r in sp.licenses()}
    assert rows["gradio"]["license"] == "Apache-2.0" and rows["fastapi"]["license"] == "MIT"
    assert rows["torch"]["version"] and "not-installed-pkg" not in rows
    assert sp.licenses(["not-installed-pkg"]) == []
    page = sp.licenses_html([{"name": "a<b", "version": "1", "license": "MIT", "url": "javascript:x"}])
    assert "a&lt;b" in page and "javascript:" not in page


def test_search_index_has_label_and_key() -> None:
    keys = ["grid_save", "sd_model_checkpoint"]
    entries = sp.search_entries(OPTIONS, keys)
    assert "grid_save" in entries["setting_grid_save"] and OPTIONS["grid_save"].label.lower() in \
        entries["setting_grid_save"]
    assert "settings_page_sd_model_checkpoint" in entries  # the Settings copy of the quicksettings dropdown
    js = sp.filter_js(entries, {"Saving images": ["grid_save"]})
    assert "settings_section_" in js and '"saving_images": ["setting_grid_save"]' in js
    assert sp.section_slug("Paths for saving") == "paths_for_saving"
