"""A1111's `modules.extra_networks`: `<name:...>` prompt tags handled by an extension.

`register_extra_network(ExtraNetwork subclass instance)` registers it in the app's model service
(`ModelService.network_kinds`, the table the pipeline hands each batch's tags to), so
`<name:arg1:arg2>` tags in a prompt reach `activate(p, params_list)` once per batch, with
`ExtraNetworkParams` (`items`, `positional`, `named`). As in A1111, every registered network is
activated each batch, with an empty list when the prompt has no tag for it (its cue to undo what
it did). `p` is the job's `Processing`: our pipeline does not pass it to network activators, so it
is found on the calling stack (the pipeline's batch loop); `p.extra_generation_params` set there
goes into the infotext. An exception in `activate` is logged with the extension's name and shown
in the job's warnings. `deactivate(p)` is not called by the pipeline (the next batch's activation
with no tags is the way to undo). Kinds the app handles itself (`lora`, `lyco`, `hypernet`)
cannot be replaced.
"""
from __future__ import annotations

import sys
from typing import Any

from webui.extensions.compat import binding
from webui.prompts.extra_networks import ExtraNetworkParams, parse_prompt, parse_prompts  # noqa: F401



class ExtraNetwork:
    def __init__(self, name: str) -> None:
        self.name = name

    def activate(self, p: Any, params_list: list[ExtraNetworkParams]) -> None:
        raise NotImplementedError

    def deactivate(self, p: Any) -> None:
        raise NotImplementedError


def _current_processing() -> Any:
    from webui.processing.context import Processing

    frame = sys._getframe(1)
    while frame is not None:
        p = frame.f_locals.get("p")
        if isinstance(p, Processing):
            return p
        frame = frame.f_back
    return None


class _NetworkKind:
    """Our activator interface (`activate(model, params) -> NetworkReport`) over an A1111 ExtraNetwork."""

    def __init__(self, network: ExtraNetwork, extension: str | None) -> None:
        self.network = network
        self.extension = extension

    def activate(self, model: Any, params: list[ExtraNetworkParams]) -> Any:
        from webui.networks.lora_networks import NetworkReport

        report = NetworkReport()
        try:
            self.network.activate(_current_processing(), list(params))
        except Exception as e:  # noqa: BLE001 - a broken network must not stop the job
            binding.report_error(self.extension, f"extra network {self.network.name!r} failed to activate")
            report.warnings.append(f"Extra network {self.network.name} ({self.extension or 'extension'}) failed: "
                                   f"{type(e).__name__}: {e}")
        return report


def _kinds() -> dict[str, Any]:
    kinds = getattr(binding.current().models, "network_kinds", None)
    if not isinstance(kinds, dict):
        raise NotImplementedError("extra_networks.register_extra_network is not supported: the model service has no "
                                  "network_kinds table to register into")
    return kinds


def register_extra_network(extra_network: ExtraNetwork) -> None:
    register_extra_network_alias(extra_network, extra_network.name)


def register_extra_network_alias(extra_network: ExtraNetwork, alias: str) -> None:
    kinds = _kinds()
    existing = kinds.get(alias)
    if existing is not None and not isinstance(existing, _NetworkKind):
        raise ValueError(f"extra network {alias!r} is handled by the app itself and cannot be replaced")
    # one activator per network: the pipeline hands it the tags of all its names in one call
    adapter = next((v for v in kinds.values() if isinstance(v, _NetworkKind) and v.network is extra_network), None)
    kinds[alias] = adapter or _NetworkKind(extra_network, binding.current_extension())


def __getattr__(name: str) -> Any:
    if name == "extra_network_registry":
        return {k: v.network for k, v in _kinds().items() if isinstance(v, _NetworkKind)}
    raise AttributeError(f"module 'modules.extra_networks' has no attribute {name!r}")


def activate(p: Any, extra_network_data: dict[str, list[ExtraNetworkParams]]) -> None:
    """A1111's: activate every registered extension network with its tags (an empty list if none)."""
    for name, kind in _kinds().items():
        if isinstance(kind, _NetworkKind):
            try:
                kind.network.activate(p, list(extra_network_data.get(name, [])))
            except Exception:  # noqa: BLE001
                binding.report_error(kind.extension, f"extra network {name!r} failed to activate")


def deactivate(p: Any, extra_network_data: dict[str, list[ExtraNetworkParams]]) -> None:
    for name, kind in _kinds().items():
        if isinstance(kind, _NetworkKind):
            try:
                kind.network.deactivate(p)
            except Exception:  # noqa: BLE001
                binding.report_error(kind.extension, f"extra network {name!r} failed to deactivate")

__all__ = [
    "ExtraNetwork", "ExtraNetworkParams", "activate", "deactivate", "parse_prompt", "parse_prompts",
    "register_extra_network", "register_extra_network_alias"
]
