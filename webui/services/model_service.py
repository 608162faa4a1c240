"""The loaded checkpoint: pick, load, switch, unload, reload; never leave a half-loaded model.

A failed load keeps the previous model in place.  A file that is itself broken is marked unusable
with its reason until it changes on disk; a transient failure (out of memory, an I/O error) is
reported and the file stays usable.
"""
from __future__ import annotations

import logging

import threading
from collections import OrderedDict
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from webui.memory.bounded_cache import BoundedCache
from webui.memory.devices import DevicePolicy, empty_cache
from webui.memory.manager import MemoryManager
from webui.memory.oom import is_oom
from webui.models.registry import CheckpointInfo, CheckpointRegistry

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """A checkpoint could not be used; the message is meant for the user."""


@dataclass
class LoadedModel:
    info: CheckpointInfo
    sd: Any                 # webui.models.load.SDModel
    encoder: Any            # webui.prompts.encoder.PromptEncoder
    schedule: Any           # webui.engine.model_schedule.ModelSchedule
    policy: DevicePolicy
    load_seconds: float
    base_vae: Any = None      # the checkpoint's own VAE (restored when the setting says None)
    vae_file: Any = None      # webui.models.vae_files.VaeFile in use, or None for the checkpoint's own
    vae_hash: str | None = None  # its A1111 short hash (computed once per file)
    memory: Any = None        # webui.memory.manager.MemoryManager: where the parts live
    attention: str = "sdp"    # the attention backend in use

    def parts(self) -> list[Any]:
        """The memory manager's parts of this model (UNet, VAE(s), text encoders)."""
        # its own VAE only: an external VAE file is shared between models and cached by the service
        own_vae = self.base_vae if self.base_vae is not None else self.sd.vae
        mods = [self.sd.unet, own_vae, *self.sd.text_encoders]
        found = [self.memory.part_of(m) for m in mods if m is not None] if self.memory else []
        return list({id(p): p for p in found if p is not None}.values())

    @property
    def family(self) -> str:
        return self.sd.family

    # A1111's names on its model object, which extensions read as `p.sd_model.<name>`
    @property
    def sd_checkpoint_info(self) -> CheckpointInfo:
        return self.info

    @property
    def sd_model_hash(self) -> str | None:
        return self.info.shorthash

    @property
    def sd_model_checkpoint(self) -> str:
        return str(self.info.path)

    @property
    def is_sdxl(self) -> bool:
        return self.sd.family == "sdxl"

    @property
    def is_sd1(self) -> bool:
        return self.sd.family == "sd1"

    @property
    def is_sd2(self) -> bool:
        return self.sd.family == "sd2"


class ModelService:
    def __init__(self, registry: CheckpointRegistry, policy: DevicePolicy, preferred: Path | None = None,
                 embeddings_dir: Path | None = None, lora_dirs: list[Path] | None = None,
                 hypernetwork_dir: Path | None = None, vae_dir: Path | None = None,
                 controlnet_dir: Path | None = None, memory: MemoryManager | None = None,
                 attention: str = "sdp") -> None:
        from webui.networks.controlnet_units import ControlNetModels
        from webui.networks.hypernetworks import HypernetworkNetworks
        from webui.networks.lora_networks import LoraNetworks

        from webui.models.file_checks import CheckCache
        from webui.models.vae_files import check_vae_file

        self.registry = registry
        # every model part is placed by this one manager (built from the flags by the app; a plain
        # one on the policy's device otherwise)
        self.memory = memory or MemoryManager(policy.device)
        self.attention = attention
        self.vae_dir = vae_dir
        self.vae_checks = CheckCache(check_vae_file)
        # external VAE files in RAM, (module, A1111 short hash): one, as A1111 keeps
        self._vae_cache: BoundedCache[tuple[Any, str]] = BoundedCache("VAE", None, 1, on_evict=self._forget_vae)
        # A1111's sd_checkpoints_limit: loaded checkpoints kept in RAM (the current one included),
        # so switching back to a recent one takes no disk read.  Keyed by file identity.
        self.cache_limit = 1
        self._ram: OrderedDict[tuple[str, int, int], LoadedModel] = OrderedDict()
        self.embeddings_dir = embeddings_dir
        self.policy = policy
        self.preferred = preferred
        self._lock = threading.RLock()
        self._loaded: LoadedModel | None = None
        self._unloaded_info: CheckpointInfo | None = None
        self.loading: str | None = None
        self.listeners: list[Callable[[LoadedModel], None]] = []
        # Extra-network kinds ("lora", "lyco", …) → the object that applies them (`.activate(model,
        # params) -> NetworkReport`); kinds sharing one object get their tags together.
        self.loras = LoraNetworks(list(lora_dirs or []))
        self.hypernetworks = HypernetworkNetworks(hypernetwork_dir)
        self.controlnets = ControlNetModels([controlnet_dir] if controlnet_dir else [], self.memory)
        self.network_kinds: dict[str, Any] = {"lora": self.loras, "lyco": self.loras, "hypernet": self.hypernetworks}

    def activate_networks(self, model: LoadedModel, networks: dict[str, list[Any]]) -> Any:
        """Hand the prompt's `<kind:name:…>` tags to their loaders — every loader is called, with no
        tags too, so that networks dropped from the prompt are removed.  Returns a NetworkReport."""
        from webui.networks.lora_networks import NetworkReport

        report = NetworkReport()
        missing = [f"{kind}:{p.items[0] if p.items else '?'}" for kind, params in networks.items()
                   if kind not in self.network_kinds for p in params]
        if missing:
            report.warnings.append(f"Networks not found: {', '.join(missing)}")
        groups: dict[int, tuple[Any, list[Any]]] = {}
        for kind, activator in self.network_kinds.items():
            groups.setdefault(id(activator), (activator, []))[1].extend(networks.get(kind, []))
        for activator, params in groups.values():
            r = activator.activate(model, params)
            report.warnings += r.warnings
            report.infotext.update(r.infotext)
        return report

    @property
    def current(self) -> LoadedModel | None:
        return self._loaded

    def default_checkpoint(self) -> CheckpointInfo | None:
        items = [c for c in self.registry.list() if not c.error]
        if self.preferred is not None:
            for c in items:
                if c.path.resolve() == self.preferred.resolve():
                    return c
        # the shipped demo model is the fallback: any checkpoint the user added comes first
        builtin = {p.resolve() for p in self.registry.builtin}
        user = [c for c in items if c.path.resolve() not in builtin]
        return (user or items or [None])[0]

    def resolve(self, name: str) -> CheckpointInfo:
        try:
            return self.registry.get(name)
        except KeyError:
            self.registry.refresh()  # a file dropped in since the last scan is found without a button
            try:
                return self.registry.get(name)
            except KeyError:
                raise ModelLoadError(f"checkpoint not found: {name!r}") from None

    def usable(self, name: str | None = None) -> CheckpointInfo:
        """The checkpoint `name` names (None: the default), or ModelLoadError saying why there is none."""
        info = self.resolve(name) if name else self.default_checkpoint()
        if info is None:
            raise ModelLoadError("no usable checkpoint in the checkpoint folder")
        if info.error:
            raise ModelLoadError(f"{info.name} is unusable: {info.error}")
        return info

    def load(self, name: str | None = None) -> LoadedModel:
        with self._lock:
            info = self.usable(name)
            cur = self._loaded
            if cur is not None and cur.info.path == info.path:
                return cur
            key = self._file_key(info)
            loaded = self._ram.pop(key, None)
            if loaded is None:
                self.loading = info.name
                try:
                    loaded = self._load_file(info)
                finally:
                    self.loading = None
            self._ram[key] = loaded
            old = self._loaded
            self._loaded = loaded
            self._unloaded_info = None
            del old
            self._trim_cache()
            for fn in self.listeners:
                fn(loaded)
            return loaded

    @staticmethod
    def _file_key(info: CheckpointInfo) -> tuple[str, int, int]:
        try:
            st = info.path.stat()
            return str(info.path), st.st_mtime_ns, st.st_size
        except OSError:
            return str(info.path), 0, 0

    def set_cache_limit(self, n: int) -> None:
        with self._lock:
            self.cache_limit = max(1, int(n))
            self._trim_cache()

    def _trim_cache(self) -> None:
        current = self._loaded
        evicted = False
        while len(self._ram) > self.cache_limit:
            key = next(k for k, v in self._ram.items() if v is not current)  # oldest that is not in use
            self._release(self._ram.pop(key))
            evicted = True
        if evicted:
            empty_cache()  # a full gc pass costs ~0.3 s: only when memory was actually given up

    def _release(self, model: LoadedModel) -> None:
        """The model leaves memory: its parts are no longer managed (nothing keeps them alive)."""
        for part in model.parts():
            self.memory.forget(part)

    def _release_all(self) -> None:
        for m in list(self._ram.values()):
            self._release(m)
        if self._loaded is not None:
            self._release(self._loaded)
        self._ram.clear()
        self._vae_cache.clear()

    def _forget_vae(self, entry: tuple[Any, str]) -> None:
        if (part := self.memory.part_of(entry[0])) is not None:
            self.memory.forget(part)

    def caches(self) -> list[Any]:
        """The bounded caches of files read for the models (for GET /sdapi/v1/memory)."""
        out: list[Any] = [self.loras.cache, self.hypernetworks.cache, self.controlnets.cache, self._vae_cache]
        if self._loaded is not None:
            out.append(self._loaded.encoder.cache)
        return out

    @property
    def cached(self) -> list[str]:
        return [m.info.name for m in self._ram.values()]

    def _load_file(self, info: CheckpointInfo) -> LoadedModel:
        from webui.engine.model_schedule import ModelSchedule
        from webui.models.file_checks import is_transient_failure
        from webui.models.file_io import ModelFileError
        from webui.models.load import load_checkpoint, load_diffusers_folder
        from webui.prompts.encoder import PromptEncoder

        t0 = time.perf_counter()
        log.debug("Reading checkpoint %s as %s", info.path, self.policy.describe())
        try:
            if info.is_folder:
                sd = load_diffusers_folder(info.path, dtype=self.policy.unet_dtype, device="cpu")
            else:
                sd = load_checkpoint(info.path, dtype=self.policy.unet_dtype, device="cpu")
            self.registry.ensure_hash(info)
        except Exception as e:  # anything a broken file triggers; the server must go on
            reason = str(e) if isinstance(e, ModelFileError) else f"{type(e).__name__}: {e}"
            if is_transient_failure(e):  # out of memory, an I/O error: the file may well be fine
                log.warning("Loading %s failed this time, the file stays usable: %s", info.name, reason)
                raise ModelLoadError(f"{info.name} could not be loaded just now ({reason}); the file is not "
                                     "marked unusable: try again") from e
            self.registry.mark_unusable(info, reason)
            raise ModelLoadError(reason if isinstance(e, ModelFileError) else
                                 f"{info.name} could not be loaded: {reason}") from e
        dev = self.policy.device
        # final dtypes while still in CPU RAM; the memory manager decides what goes to the device
        for m, dtype in [(sd.unet, self.policy.unet_dtype), (sd.vae, self.policy.vae_dtype),
                         *((te, self.policy.text_dtype) for te in sd.text_encoders)]:
            if next(m.parameters()).dtype != dtype:
                m.to(dtype)
        from webui.memory.attention import configure_attention
        attention = configure_attention(sd.unet, self.attention, self.policy.upcast_attention)
        try:
            self._register(sd, info)
        except BaseException as e:
            for m in [sd.unet, sd.vae, *sd.text_encoders]:
                if (part := self.memory.part_of(m)) is not None:
                    self.memory.forget(part)
            if is_oom(e):  # not the file's fault: it stays usable, the previous model stays loaded
                self.memory.note_oom("load", retried=False)
                raise ModelLoadError(f"{info.name}: out of device memory while loading it ({str(e)[:200]}); "
                                     "the previous model stays loaded. Start without --highvram/--gpu-only, "
                                     "or with --medvram or --lowvram") from None
            raise
        from webui.networks.embeddings import EmbeddingDatabase
        widths = [te.get_input_embeddings().weight.shape[1] for te in sd.text_encoders]
        embeddings = EmbeddingDatabase(self.embeddings_dir, sd.tokenizers, widths).load()
        from webui.engine.memory_stages import text_encoding
        encoder = PromptEncoder(sd.family, sd.text_encoders, sd.tokenizers, dev, self.policy.unet_dtype, embeddings,
                                placement=lambda: text_encoding(self.memory, sd.text_encoders))
        schedule = ModelSchedule(sd.alphas_cumprod, sd.prediction_type)
        dt = time.perf_counter() - t0
        log.info("Loaded %s (%s%s, %s) in %.2fs on %s", info.title, sd.family, ", inpainting" if sd.inpainting else "",
                 sd.prediction_type, dt, self.policy.describe())
        return LoadedModel(info, sd, encoder, schedule, self.policy, dt, memory=self.memory, attention=attention)

    def _register(self, sd: Any, info: CheckpointInfo) -> None:
        name = info.model_name
        self.memory.register(sd.unet, f"{name}: UNet", "unet", sd.family)
        self.memory.register(sd.vae, f"{name}: VAE", "vae", sd.family)
        for i, te in enumerate(sd.text_encoders):
            self.memory.register(te, f"{name}: text encoder {i + 1}", "text_encoder", sd.family)

    # ---- VAE ----
    def vae_files(self) -> dict[str, Any]:
        from webui.models.vae_files import scan_vae_files
        return scan_vae_files(self.vae_dir, self.registry.ckpt_dir)

    def vae_listing(self) -> list[dict[str, Any]]:
        """A1111's GET /sdapi/v1/sd-vae entries, plus `error` for a file that cannot be used."""
        out = []
        for f in self.vae_files().values():
            entry: dict[str, Any] = {"model_name": f.name, "filename": str(f.path)}
            if err := self.vae_checks.get(f.path).error:
                entry["error"] = err
            out.append(entry)
        return out

    def refresh_files(self) -> None:
        """Rescan every model folder (the quicksettings 🔄 and page load)."""
        self.registry.refresh()
        self.loras.refresh()
        self.hypernetworks.refresh()
        self.controlnets.refresh()

    def unusable_files(self) -> list[tuple[str, str, str]]:
        """(kind, file name, reason) for every file in the model folders that cannot be used."""
        # from the cached checks only (no headers re-read): the UI asks for this every second at startup
        out = [("checkpoint", c.name, c.error) for c in self.registry.list() if c.error]
        out += [("VAE", e["model_name"], e["error"]) for e in self.vae_listing() if "error" in e]
        for kind, net in (("LoRA", self.loras), ("hypernetwork", self.hypernetworks)):
            out += [(kind, p.name, err) for p in net.files.values() if (err := net.checks.get(p).error)]
        out += [("ControlNet", name, err) for name, err in self.controlnets.unusable().items()]
        return out

    def ensure_vae(self, model: LoadedModel, choice: str | None) -> None:
        """Make ``model`` decode with the VAE the `sd_vae` setting names: "Automatic" (a
        `<checkpoint>.vae.*` file if there is one, else the checkpoint's own), "None" (the
        checkpoint's own) or a file name from the VAE list.  A bad file raises ModelLoadError and
        leaves the current VAE in place."""
        from webui.models.file_io import ModelFileError
        from webui.models.vae_files import automatic_vae, load_vae_file

        files = self.vae_files()
        choice = choice or "Automatic"
        if choice == "Automatic":
            target = automatic_vae(model.info.path, files) if not model.info.is_folder else None
        elif choice == "None":
            target = None
        elif choice in files:
            target = files[choice]
        else:
            raise ModelLoadError(f"VAE not found: {choice!r} (choose Automatic, None or one of {sorted(files)})")
        if model.base_vae is None:
            model.base_vae = model.sd.vae
        if target == model.vae_file:
            return
        vae_hash: str | None = None
        if target is None:
            model.sd.vae = model.base_vae
        else:
            def read(path: Path) -> tuple[Any, str]:
                if err := self.vae_checks.get(path).error:
                    raise ModelLoadError(f"VAE {target.name} is unusable: {err}")
                try:
                    vae = load_vae_file(path, self.policy.vae_dtype)
                except ModelFileError as e:
                    raise ModelLoadError(f"VAE {target.name} could not be loaded: {e}") from None
                if vae.config.latent_channels != model.base_vae.config.latent_channels:
                    raise ModelLoadError(f"VAE {target.name} has {vae.config.latent_channels} latent channels; "
                                         f"the model needs {model.base_vae.config.latent_channels}")
                self.memory.register(vae, f"VAE {target.name}", "vae", model.family)
                return vae, target.shorthash()

            vae, vae_hash = self._vae_cache.get_or_load(target.path, read)
            if vae.config.latent_channels != model.base_vae.config.latent_channels:  # cached for another model
                raise ModelLoadError(f"VAE {target.name} has {vae.config.latent_channels} latent channels; "
                                     f"the model needs {model.base_vae.config.latent_channels}")
            model.sd.vae = vae
        model.vae_file = target
        model.vae_hash = vae_hash

    def require(self) -> LoadedModel:
        """The model a job should use, loading the default (or the last unloaded one) on demand."""
        with self._lock:
            if self._loaded is not None:
                return self._loaded
            name = self._unloaded_info.name if self._unloaded_info else None
            return self.load(name)

    def unload(self) -> None:
        with self._lock:
            if self._loaded is not None:
                self._unloaded_info = self._loaded.info
            self._release_all()
            self._loaded = None
            empty_cache()

    def reload(self) -> LoadedModel:
        with self._lock:
            name = (self._loaded.info.name if self._loaded else
                    self._unloaded_info.name if self._unloaded_info else None)
            self._release_all()  # reload means: read the file again
            self._loaded = None
            empty_cache()
            return self.load(name)
