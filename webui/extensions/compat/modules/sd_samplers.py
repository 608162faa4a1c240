"""A1111's `modules.sd_samplers`: the sampler names (ours are A1111's, with its aliases and options).

`all_samplers` / `samplers` / `samplers_for_img2img` (SamplerData: name, constructor, aliases,
options), `all_samplers_map` {name: SamplerData}, `samplers_map` {lower-case name or alias: name},
`visible_sampler_names()`, `find_sampler_config(name)`. `SamplerData.constructor` and
`create_sampler` raise NotImplementedError: A1111 builds k-diffusion sampler objects there; here
samplers run inside the app's pipeline (select one with `p.sampler_name`).
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any

from webui.engine.samplers import SAMPLERS, SCHEDULE_TYPES

SamplerData = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])


def _no_constructor(name: str) -> Any:
    def constructor(model: Any = None) -> Any:
        raise NotImplementedError(f"sampler objects are not supported: {name!r} runs inside the app's pipeline "
                                  f"(set p.sampler_name)")
    return constructor


all_samplers: list[SamplerData] = [SamplerData(s.name, _no_constructor(s.name), list(s.aliases), dict(s.options))
                                   for s in SAMPLERS]
all_samplers_map: dict[str, SamplerData] = {s.name: s for s in all_samplers}
samplers: list[SamplerData] = list(all_samplers)
samplers_for_img2img: list[SamplerData] = list(all_samplers)
samplers_map: dict[str, str] = {}
for _s in all_samplers:
    samplers_map[_s.name.lower()] = _s.name
    for _alias in _s.aliases:
        samplers_map[_alias.lower()] = _s.name
schedulers = list(SCHEDULE_TYPES)  # name, label, aliases, default_rho, need_inner_model (A1111's Scheduler fields)
schedulers_map = {**{s.name: s for s in SCHEDULE_TYPES}, **{s.label: s for s in SCHEDULE_TYPES}}


def visible_sampler_names() -> list[str]:
    """A1111's: the samplers the hide_samplers option leaves in the UI."""
    from webui.extensions.compat import binding
    hidden = set(binding.current().settings.get("hide_samplers") or ()) if binding.is_bound() else set()
    return [s.name for s in samplers if s.name not in hidden]


def find_sampler_config(name: str | None) -> SamplerData | None:
    if name is None:
        return all_samplers[0]
    key = samplers_map.get(str(name).lower(), name)
    return all_samplers_map.get(key)


def create_sampler(name: str, model: Any) -> Any:
    raise NotImplementedError("sd_samplers.create_sampler is not supported: samplers run inside the app's pipeline "
                              "(set p.sampler_name)")

__all__ = [
    "SamplerData", "all_samplers", "all_samplers_map", "create_sampler", "find_sampler_config", "samplers",
    "samplers_for_img2img", "samplers_map", "schedulers", "schedulers_map", "visible_sampler_names"
]
