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
