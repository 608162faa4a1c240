"""`<lora:name:multiplier>` tags → weight deltas on the loaded model (through `WeightPatcher`).

Files are found by name or by their `ss_output_name` alias in `models/Lora` and `models/LyCORIS`;
each is read once and kept (in its own dtype, in a cache bounded by bytes: option `lora_cache_mb`)
while its mtime and size stay the same, so changing only a multiplier re-adds deltas without
touching the disk.  Any number of LoRAs apply at once; a tag removed from
the prompt restores the original weights exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from webui.memory.bounded_cache import MB, BoundedCache
from webui.models.file_checks import CheckCache
from webui.networks.lora import (LoraFile, LoraFileError, check_lora_file, is_text_encoder_target, module_lookup,
                                 read_lora, read_metadata, resolve_modules, scan_folder, tag_multipliers)
from webui.networks.patcher import LayerUpdate, WeightPatcher


@dataclass
class NetworkReport:
    """What activating a prompt's networks tells the user and the infotext."""
    warnings: list[str] = field(default_factory=list)
    infotext: dict[str, str] = field(default_factory=dict)


DEFAULT_CACHE_MB = 256


class LoraNetworks:
    def __init__(self, folders: list[Path], cache_mb: int = DEFAULT_CACHE_MB) -> None:
        self.folders = [f for f in folders if f is not None]
        self.files: dict[str, Path] = {}
        self.errors: dict[str, str] = {}
        self.cache: BoundedCache[LoraFile] = BoundedCache("LoRA", cache_mb * MB)
        self.checks = CheckCache(check_lora_file)
        self._aliases: dict[str, str] = {}
        self._patcher = WeightPatcher()
        self._model: Any = None
        self._lookup: dict[str, tuple[str, torch.nn.Module]] | None = None
        self.refresh()

    # ---- files ----
    def refresh(self) -> None:
        self.files = scan_folder(self.folders)
        self._aliases = {}
        for name, path in self.files.items():
            try:
                alias = read_metadata(path).get("ss_output_name")
            except Exception as e:  # a broken header is reported when the file is used
                self.errors[name] = f"{type(e).__name__}: {e}"
                continue
            if alias and alias not in self.files:
                self._aliases.setdefault(alias, name)

    def listing(self, family: str | None = None) -> list[dict[str, Any]]:
        """A1111's GET /sdapi/v1/loras entries, plus `sd_version` (from the header), `fits` (whether
        it matches the loaded model's family; None when either is unknown) and `error` (unusable)."""
        out = []
        for name, path in sorted(self.files.items()):
            check = self.checks.get(path)
            try:
                meta: dict[str, Any] = read_metadata(path)
            except LoraFileError:
                meta = {}
            entry = {"name": name, "alias": meta.get("ss_output_name") or name, "path": str(path),
                     "metadata": meta, "sd_version": check.family, "fits": check.fits(family),
                     "note": check.note(family)}
            if check.error:
                entry["error"] = check.error
            out.append(entry)
        return out

    def find(self, name: str) -> Path | None:
        for _ in range(2):  # a file dropped in since the last scan is found without a refresh button
            if name in self.files:
                return self.files[name]
            if name in self._aliases:
                return self.files[self._aliases[name]]
            self.refresh()
        return None

    def load(self, path: Path) -> LoraFile:
        return self.cache.get_or_load(path, read_lora)

    def set_cache_mb(self, mb: int) -> None:
        self.cache.set_limits(max_bytes=int(mb) * MB)

    # ---- activation ----
    def _bind(self, model: Any) -> None:
        if self._model is model:
            return
        if self._model is not None:
            self._patcher.restore_all()  # the old model may live on in a cache: leave it clean
        self._patcher = WeightPatcher()
        self._model = model
        self._lookup = None

    def activate(self, model: Any, params: list[Any]) -> NetworkReport:
        """Make exactly the LoRAs in ``params`` (ExtraNetworkParams) active on ``model``."""
        self._bind(model)
        report = NetworkReport()
        updates: dict[str, LayerUpdate] = {}
        used: list[LoraFile] = []
        for p in params:
            if not p.positional:
                report.warnings.append("LoRA tag without a name")
                continue
            name = str(p.positional[0])
            try:
                te_mult, unet_mult = tag_multipliers(p)
            except ValueError:
                report.warnings.append(f"LoRA {name}: multiplier is not a number ({':'.join(map(str, p.items[1:]))})")
                continue
            path = self.find(name)
            if path is None:
                report.warnings.append(f"Networks not found: lora:{name}")
                continue
            check = self.checks.get(path)
            if check.error:
                report.warnings.append(f"LoRA {name} is unusable: {check.error}")
                continue
            try:
                lora = self.load(path)
            except (LoraFileError, OSError) as e:
                report.warnings.append(f"LoRA {name} is unusable: {e}")
                continue
            if self._lookup is None:
                self._lookup = module_lookup(model.sd.unet, list(model.sd.text_encoders))
            found, missing = resolve_modules(lora, self._lookup)
            if not found:
                report.warnings.append(f"LoRA {name}: none of its {len(lora.modules)} layers match the loaded "
                                       f"{model.sd.family} model (made for another architecture?)")
                continue
            if missing:
                report.warnings.append(f"LoRA {name}: {len(missing)} of {len(lora.modules)} layers match nothing "
                                       f"in the loaded model (e.g. {missing[0]})")
            ident = (str(path), path.stat().st_mtime_ns)
            for qualified, layer, mod in found:
                mult = te_mult if is_text_encoder_target(qualified) else unet_mult
                if mult == 0:
                    continue
                upd = updates.setdefault(qualified, LayerUpdate(layer, []))
                upd.terms.append(((ident, mod.key), mult, mod.delta))
            used.append(lora)
        try:
            changed = self._patch(model, updates)
        except Exception as e:  # the patcher has put every weight back: the model is as before
            report.warnings.append(f"LoRA could not be applied ({type(e).__name__}: {e}); the model is unchanged")
            return report
        if any(is_text_encoder_target(n) for n in changed) and getattr(model, "encoder", None) is not None:
            model.encoder.invalidate()  # cached prompt encodings came from the old text-encoder weights
        if used:
            report.infotext["Lora hashes"] = ", ".join(f"{lora.alias}: {lora.addnet_hash}" for lora in used)
        return report

    def _patch(self, model: Any, updates: dict[str, LayerUpdate]) -> list[str]:
        """Apply through the memory manager: streamed parts are whole again first (diffusers'
        streaming keeps its own copies of the weights); an out-of-memory error while computing
        the new weights on the device is retried once with every part in CPU RAM (Forge's way)."""
        memory = getattr(model, "memory", None)
        if memory is None or not updates and not self._patcher.applied:
            return self._patcher.set(updates)
        from webui.memory.oom import is_oom
        memory.settle(model.parts())
        try:
            memory.checkpoint("lora")
            return self._patcher.set(updates)
        except Exception as e:  # noqa: BLE001
            if not is_oom(e):
                raise
        memory.note_oom("lora", retried=True)  # the patcher has put every weight back
        memory.offload_all()
        changed = self._patcher.set(updates)
        memory.note("Applying the LoRA ran out of device memory; it was applied with the model in CPU RAM")
        return changed

    @property
    def active_layers(self) -> list[str]:
        return self._patcher.patched
