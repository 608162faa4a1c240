"""The service layer as one object the UI and the API both receive (built once by the app)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from typing import Any, Callable

from webui.cli import Paths, attention_backend, cmd_flags, memory_mode
from webui.extensions.manager import ExtensionManager
from webui.memory.devices import DevicePolicy
from webui.memory.manager import MemoryManager
from webui.memory.stats import MemoryWatch, memory_report
from webui.models.registry import CheckpointRegistry
from webui.serving.accounts import NO_ACCOUNTS, Accounts, load_accounts, redact_flags
from webui.serving.executor import Executor, GenerationSpec, InProcessExecutor, with_fixed_seeds
from webui.serving.path_guard import PathGuard, guard_from_args
from webui.prompts.styles import PromptStyle, StyleDatabase
from webui.services.jobs import SERVER_OWNER, Job, JobQueue
from webui.services.limits import QUEUED_PER_USER, check_request_size, limit_value
from webui.services.model_service import ModelLoadError, ModelService
from webui.services.extras import ExtrasService, build_extras_service
from webui.services.img2img import Img2ImgService
from webui.services.img2img_scripts import Img2ImgScripts
from webui.processing.pipeline import Pipeline
from webui.scripts.builtin import builtin_catalog
from webui.services.requests import Img2ImgRequest, Txt2ImgRequest
from webui.services.training import TrainingService
from webui.services.txt2img import GenerationError, GenerationResult, Txt2ImgService
from webui.settings import Settings


@dataclass
class Services:
    args: argparse.Namespace
    paths: Paths
    settings: Settings
    registry: CheckpointRegistry
    models: ModelService
    queue: JobQueue
    txt2img: Txt2ImgService
    styles: StyleDatabase
    img2img: Img2ImgService
    img2img_scripts: Img2ImgScripts
    extras: ExtrasService
    memory: MemoryManager
    pipeline: Pipeline
    extensions: ExtensionManager | None = None  # <data-dir>/extensions (the Extensions tab, /sdapi/v1/extensions)
    training: TrainingService | None = None  # the Train tab and /sdapi/v1/create/*, /train/*
    accounts: Accounts = NO_ACCOUNTS  # --gradio-auth / --api-auth / --admin (empty: no log-in)
    page_login: Any = None  # the page's signed-in sessions (webui.serving.page_login), set by the app
    # set by the composition root once the server runs: reload extensions and swap in a new API + UI
    reload_ui: Callable[[], str] | None = None
    # set by the composition root: ask the server to shut down after the running requests (server-stop)
    stop_server: Callable[[], None] | None = None
    # where generations run: in this process (default) or on a scale-out backend (--backend ray)
    executor: Executor | None = None

    def __post_init__(self) -> None:
        if self.executor is None:
            self.executor = InProcessExecutor(lambda req, state, save: self.txt2img.run(req, state, save=save),
                                              lambda req, state, save: self.img2img_scripts.run(req, state, save=save))

    def use_executor(self, executor: Executor) -> None:
        """Send generations to `executor` from now on (the queue runs as many side by side as it takes)."""
        old, self.executor = self.executor, executor
        self.queue.set_slots(executor.capacity() if executor.shared else 1)
        if old is not None and old is not executor:
            old.close()

    def submit_txt2img(self, req: Txt2ImgRequest, *, save: bool, label: str = "txt2img",
                       owner: str = SERVER_OWNER) -> Job:
        """Queue a generation for `owner` (LimitError when the request or the owner's queue is over a limit)."""
        check_request_size(self.settings, req.batch_size, req.n_iter)
        self.txt2img.validate(req)  # fail before queueing
        return self._submit_generation("txt2img", req, save, label, owner)

    def submit_img2img(self, req: Img2ImgRequest, *, save: bool, label: str = "img2img",
                       owner: str = SERVER_OWNER) -> Job:
        check_request_size(self.settings, req.batch_size, req.n_iter)
        self.img2img.validate(req)  # an unknown script fails here too, before queueing
        return self._submit_generation("img2img", req, save, label, owner)

    def _submit_generation(self, kind: str, req: Txt2ImgRequest, save: bool, label: str, owner: str) -> Job:
        executor = self.executor
        assert executor is not None
        spec = GenerationSpec(kind, req, save)
        if executor.shared:  # sent elsewhere: seeds drawn now (a retry makes the same pictures), model named
            spec = GenerationSpec(kind, with_fixed_seeds(req), save, checkpoint=self.checkpoint_title(req),
                                  options=self.settings.all())
        return self.queue.submit(self._watched(lambda state: executor.run(replace(spec, task_id=state.job_id), state)),
                                 label=label, task_id=req.force_task_id or None, owner=owner, shared=executor.shared)

    def checkpoint_title(self, req: Txt2ImgRequest) -> str:
        """The title ("name [sha256 short]") of the checkpoint `req` runs on: its override, else the
        selected one, else the default. Files are identified by their hashes across machines."""
        wanted = (req.override_settings or {}).get("sd_model_checkpoint") or self.settings.get("sd_model_checkpoint")
        try:
            return self._usable_checkpoint(str(wanted) if wanted else None).title
        except ModelLoadError as e:
            raise GenerationError(str(e)) from None

    def _usable_checkpoint(self, name: str | None) -> Any:
        """The registry's entry for `name` (None: the default), hashed; ModelLoadError when unusable."""
        info = self.models.usable(name)
        self.registry.ensure_hash(info)
        return info

    def _watched(self, run: Callable[[Any], GenerationResult]) -> Callable[[Any], GenerationResult]:
        """The job's peak memory goes with its result (shown under the gallery; a remote worker's own)."""
        def job(state: Any) -> GenerationResult:
            watch = MemoryWatch(self.memory.device)
            result = run(state)
            result.memory = result.memory or watch.summary()
            return result
        return job

    def memory_report(self) -> dict[str, Any]:
        return memory_report(self.memory, self.models.caches() + [self.extras.upscalers.cache, self.extras.faces.cache])

    def submit_img2img_batch(self, req: Img2ImgRequest, input_dir: str, output_dir: str, mask_dir: str,
                             label: str = "img2img batch", owner: str = SERVER_OWNER) -> Job:
        from webui.services.img2img_batch import check_dirs, run_batch
        check_dirs(input_dir, output_dir, mask_dir, self.path_guard())  # a missing folder fails before queueing
        self.pipeline.scripts.img2img.check_request(req.script_name, req.alwayson_scripts)
        check_request_size(self.settings, req.batch_size, req.n_iter)  # per picture
        return self.queue.submit(lambda state: run_batch(self.img2img_scripts, req, input_dir, output_dir, mask_dir,
                                                         state), label=label, owner=owner)

    def select_checkpoint(self, name: str, owner: str = SERVER_OWNER) -> str:
        """Switch the model through the queue (never under a running job) and persist the choice."""
        if self.executor is not None and self.executor.shared:
            # scale-out: the workers load it (each job names its checkpoint); the front only remembers the choice
            title = self._usable_checkpoint(name).title
            self.settings.set("sd_model_checkpoint", title, notify=False)
            return title
        loaded = self.queue.call(lambda state: self.models.load(name), label="load checkpoint", owner=owner)
        self.settings.set("sd_model_checkpoint", loaded.info.title, notify=False)
        return loaded.info.title

    def merge_checkpoints(self, a: str | None, b: str | None, c: str | None, method: str, multiplier: float,
                          save_as_half: bool, custom_name: str = "", *, save_metadata: bool = True,
                          add_merge_recipe: bool = True, copy_metadata: bool = True, config_source: int = 0,
                          owner: str = SERVER_OWNER) -> str:
        """Run A1111's merger through the job queue (never beside a generation) and list the result
        (the registry is rescanned, so every checkpoint list and GET /sd-models show it at once)."""
        from webui.models.merge import MergeRecipe, merge_checkpoints

        if not a:
            raise ValueError("choose a primary model (A)")
        pa = self.models.resolve(a)
        pb = self.models.resolve(b) if b else None
        pc = self.models.resolve(c) if c else None
        m = round(float(multiplier), 2)
        if custom_name.strip():
            stem = custom_name.strip()
        elif method == "Add difference" and pb and pc:
            stem = f"{pa.model_name} + {m}({pb.model_name} - {pc.model_name})"
        elif pb:
            stem = f"{round(1 - m, 2)}({pa.model_name}) + {m}({pb.model_name})"
        else:
            stem = f"{pa.model_name}-copy"
        stem = stem.replace("/", "_").removesuffix(".safetensors")
        out = self.paths.ckpt_dir / f"{stem}.safetensors"
        if out.exists():
            raise ValueError(f"{out.name} already exists in the checkpoint folder: choose another name")
        recipe = MergeRecipe(pa.path, pb.path if pb else None, pc.path if pc else None, method, m,
                             bool(save_as_half), out, save_metadata=bool(save_metadata),
                             add_merge_recipe=bool(add_merge_recipe), copy_metadata=bool(copy_metadata),
                             config_source=int(config_source))
        path = self.queue.call(lambda state: merge_checkpoints(recipe), label="merge checkpoints", owner=owner)
        self.registry.refresh()
        return str(path)

    def save_style(self, name: str, prompt: str, negative_prompt: str) -> None:
        """Add or replace a style in styles.csv (the previous file is kept as styles.csv.bak)."""
        name = (name or "").strip()
        if not name:
            raise ValueError("a style needs a name")
        self.styles.styles[name] = PromptStyle(name, prompt or "", negative_prompt or "", str(self.styles.path))
        self.styles.save()

    def delete_style(self, name: str) -> None:
        if name not in self.styles.styles:
            raise ValueError(f"no style named {name!r}")
        del self.styles.styles[name]
        self.styles.save()

    def options(self) -> dict[str, Any]:
        opts = self.settings.all()
        cur = self.models.current
        if cur is not None:
            opts["sd_model_checkpoint"] = cur.info.title
            opts["sd_checkpoint_hash"] = cur.info.sha256
        elif self.executor is not None and self.executor.shared and opts.get("sd_model_checkpoint"):
            try:  # scale-out: the selected checkpoint (the workers hold it)
                info = self.models.resolve(str(opts["sd_model_checkpoint"]))
                opts["sd_checkpoint_hash"] = info.sha256
            except ModelLoadError:
                pass
        return opts

    def cmd_flags(self) -> dict[str, Any]:
        return redact_flags(cmd_flags(self.args), self.accounts)  # never a credential (A1111 shows them)

    def path_guard(self) -> PathGuard:
        """Where requests may name folders (everywhere on localhost; see serving.path_guard)."""
        return guard_from_args(self.args, self.paths.data_dir)


def build_services(args: argparse.Namespace, paths: Paths) -> Services:
    accounts = load_accounts(args)  # a bad credentials flag stops the start before anything loads
    settings = Settings.load(paths.config_file)
    path_guard = guard_from_args(args, paths.data_dir)
    settings.add_value_check(path_guard.check_option)  # outdir_* options confined when exposed
    builtin = sorted(paths.builtin_models_dir.glob("*.safetensors")) if paths.builtin_models_dir.is_dir() else []
    extra = [args.ckpt.resolve()] if args.ckpt else []
    registry = CheckpointRegistry(paths.ckpt_dir, paths.cache_dir, extra_files=extra, builtin=builtin)
    registry.refresh()
    policy = DevicePolicy.from_flags(args.use_cpu, args.device_id, args.precision, args.no_half, args.no_half_vae,
                                     upcast_sampling=args.upcast_sampling, bf16=args.bf16,
                                     nan_check=not args.disable_nan_check)
    memory = MemoryManager(policy.device, memory_mode(args), budget_mb=args.vram_budget_mb,
                           gpu_weights_mb=int(settings.get("gpu_weights_mb") or 0))
    settings.on_change("gpu_weights_mb", lambda v: memory.set_gpu_weights_mb(int(v or 0)))
    models = ModelService(registry, policy, preferred=args.ckpt.resolve() if args.ckpt else None,
                          embeddings_dir=paths.embeddings_dir, lora_dirs=[paths.lora_dir, paths.lyco_dir],
                          hypernetwork_dir=paths.hypernetwork_dir, vae_dir=paths.vae_dir,
                          controlnet_dir=paths.controlnet_dir, memory=memory, attention=attention_backend(args))
    models.set_cache_limit(int(settings.get("sd_checkpoints_limit")))
    settings.on_change("sd_checkpoints_limit", lambda v: models.set_cache_limit(int(v)))
    models.loras.set_cache_mb(int(settings.get("lora_cache_mb")))
    settings.on_change("lora_cache_mb", lambda v: models.loras.set_cache_mb(int(v)))
    queue = JobQueue()
    queue.max_queued_per_owner = int(limit_value(settings, QUEUED_PER_USER))
    settings.on_change(QUEUED_PER_USER, lambda v: setattr(queue, "max_queued_per_owner", int(float(v or 0))))
    styles = StyleDatabase(paths.styles_file)
    extras = build_extras_service(args, paths, settings, queue, memory)
    extras.path_guard = path_guard  # batch-from-directory folders confined when exposed
    # hires fix and SD upscale offer the Extras tab's upscalers (model files included)
    names = extras.upscalers.names
    pipeline = Pipeline(models, settings, paths.outputs_dir, styles, extras.upscale, names,
                        builtin_catalog(extras.upscale, names), faces=getattr(extras, "faces", None))
    txt2img = Txt2ImgService(models, settings, paths.outputs_dir, styles, pipeline=pipeline)
    img2img = Img2ImgService(models, settings, paths.outputs_dir, styles, pipeline=pipeline)
    return Services(args, paths, settings, registry, models, queue, txt2img, styles, img2img,
                    Img2ImgScripts(img2img, extras.upscale, names), extras=extras, memory=memory, pipeline=pipeline,
                    extensions=ExtensionManager(paths.data_dir / "extensions", settings, args),
                    training=TrainingService(models, queue, paths.embeddings_dir, paths.hypernetwork_dir,
                                             lora_dir=paths.lora_dir, data_dir=paths.data_dir, settings=settings,
                                             memory=memory, pipeline=pipeline,
                                             path_guard=path_guard),
                    accounts=accounts)


__all__ = ["Services", "build_services", "GenerationError", "GenerationResult", "ModelLoadError"]
