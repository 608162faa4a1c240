"""A1111's remaining routes and the README's lists, against the real server (session `api_server`)."""
from __future__ import annotations

import re

import requests

from conftest import ROOT


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, f"README has no '## {title}' section"
    return " ".join(m.group(1).split())


def test_readme_sampler_list_matches_the_samplers_route(api_server) -> None:
    section = _readme_section("Samplers")
    listed = section.split(" (the order of")[0].split(", ")
    served = [s["name"] for s in requests.get(api_server.api("samplers"), timeout=10).json()]
    assert listed == served
    schedules = section.split("schedule types ")[1].split(". ")[0].split(", ")
    served = [s["label"] for s in requests.get(api_server.api("schedulers"), timeout=10).json()]
    assert schedules == served


def test_docs_pages_load_their_assets_from_the_server(api_server) -> None:
    """/docs and /redoc work offline: every script, stylesheet and icon they reference is served here."""
    for page in ("/docs", "/redoc"):
        r = requests.get(api_server.url + page, timeout=10)
        assert r.status_code == 200, page
        refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", r.text)
        refs += re.findall(r"""(?:url|spec-url)\s*:\s*["']([^"']+)["']""", r.text)
        assert refs, page
        assert not re.search(r"https?://", r.text.replace("http://www.w3.org", "")), f"{page} links off-site"
        for ref in refs:
            assert ref.startswith("/"), f"{page} references {ref}"
            got = requests.get(api_server.url + ref, timeout=10)
            assert got.status_code == 200 and len(got.content) > 100, ref
        assert any(ref.endswith(".js") for ref in refs), page
    assert requests.get(api_server.url + "/openapi.json", timeout=10).json()["paths"]
