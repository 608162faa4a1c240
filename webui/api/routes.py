"""A1111-compatible HTTP API (/sdapi/v1/*): a thin skin over the services."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import time
from typing import Any, Callable

from fastapi import APIRouter, Body, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from webui import infotext
from webui.api.admin import admin_only
from webui.api.extensions_routes import build_extensions_router
from webui.api.extras_routes import build_extras_router, upscaler_listing
from webui.api.train_routes import build_train_router
from webui.api.interrogate_routes import build_interrogate_router
from webui.api.progress_routes import stop_task
from webui.api.system_routes import build_modules_router, build_server_router
from webui.engine.samplers import SAMPLERS, SCHEDULE_TYPES
from webui.services.container import GenerationError, ModelLoadError, Services
from webui.services.embedding_listing import embeddings_listing
from webui.serving.caller import caller_from_scope
from webui.services.jobs import Job, JobState, TaskIdError
from webui.services.limits import LimitError
from webui.imaging.decode import MAX_INPUT_SIDE, ImageInputError, decode_base64_image
from webui.processing.checks import RequestValueError, check_option_value
from webui.services.requests import LATENT_UPSCALE_MODES, Img2ImgRequest, Txt2ImgRequest
from webui.settings import SettingsError

def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities (which JSON cannot carry; a request's untyped fields may hold
    them, sent as JSON's NaN/Infinity literals) written as strings, so echoing it cannot fail."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def generation_error(e: GenerationError) -> HTTPException:
    """A value out of range (checks.RequestValueError) is a 422 like the request models' own; other
    errors of a job (a model that does not load, an unusable unit, ...) stay 400."""
    status = getattr(e, "status", None)  # a scale-out cluster with no worker: 503 (executor.BackendUnavailable)
    return HTTPException(status or (422 if isinstance(e, RequestValueError) else 400), str(e))


def decode_image(data: Any, what: str = "image") -> Image.Image:
    """base64 image with or without a data: prefix → PIL image; bad data → HTTP 400."""
    try:
        return decode_base64_image(data, what)
    except ImageInputError as e:
        raise HTTPException(400, str(e)) from None


def encode_png(img: Image.Image, text: str | None = None) -> str:
    from PIL import PngImagePlugin
    buf = io.BytesIO()
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
    img.save(buf, format="PNG", pnginfo=info)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class StopRequest(BaseModel):
    """Optional body of /interrupt and /skip (A1111 clients send none: the caller's running job)."""
    id_task: str | None = Field(None, max_length=200, description="stop this job: cancel it while queued, "
                                "interrupt (or skip) it while running")


async def await_job(submit: Callable[[], Job]) -> Any:
    """Queue a job from a worker thread (checks may read files) and wait for its result without
    holding a thread: a long generation never ties up the pool that /progress and the rest answer from."""
    try:
        job = await run_in_threadpool(submit)
    except TaskIdError as e:  # a force_task_id naming a job that still runs
        raise HTTPException(409, str(e)) from None
    except GenerationError as e:
        raise generation_error(e) from None
    try:
        return await asyncio.wrap_future(job.future)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():  # the server is stopping this request: let it
            raise
        # the job was stopped while it waited (DELETE /internal/tasks, /interrupt with its id, a closed tab)
        raise HTTPException(409, f"{job.task_id} was cancelled before it started") from None
    except GenerationError as e:
        raise generation_error(e) from None


class PngInfoRequest(BaseModel):
    image: str = ""


class ControlNetDetectRequest(BaseModel):
    """sd-webui-controlnet's /controlnet/detect body (its field names); thresholds and the resolution
    left out take the preprocessor's own defaults."""
    model_config = ConfigDict(allow_inf_nan=False)

    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list)
    controlnet_masks: list[str] | None = None
    controlnet_processor_res: int | None = Field(None, ge=-1, le=MAX_INPUT_SIDE)
    controlnet_threshold_a: float | None = Field(None, ge=-1e6, le=1e6)
    controlnet_threshold_b: float | None = Field(None, ge=-1e6, le=1e6)
    low_vram: bool = False


def progress_dict(state: JobState | None, queued: int, skip_current_image: bool) -> dict[str, Any]:
    if state is None:
        return {"progress": 0.0, "eta_relative": 0.0,
                "state": {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
                          "job_count": 0, "job_timestamp": "0", "job_no": 0, "sampling_step": 0,
                          "sampling_steps": 0, "queued": queued},
                "current_image": None, "textinfo": None}
    img = None
    if not skip_current_image and state.current_image is not None:
        img = encode_png(state.current_image)
    return {
        "progress": round(state.progress, 4),
        "eta_relative": round(state.eta(), 3),
        "state": {"skipped": state.skipped, "interrupted": state.interrupted, "stopping_generation": False,
                  "job": state.label, "job_count": state.job_count, "job_timestamp": state.job_timestamp,
                  "job_no": state.job_no, "sampling_step": state.sampling_step,
                  "sampling_steps": state.sampling_steps, "queued": queued},
        "current_image": img,
        "textinfo": state.textinfo,
    }


def build_controlnet_router(svc: Services) -> APIRouter:
    """sd-webui-controlnet's own routes (clients check them to find ControlNet support)."""
    from webui.networks.controlnet_units import PREPROCESSORS, ControlNetError, decode_image, preprocess

    r = APIRouter(prefix="/controlnet", tags=["controlnet"])

    @r.get("/version")
    def version() -> dict[str, int]:
        return {"version": 2}

    @r.get("/model_list")
    def model_list() -> dict[str, Any]:
        svc.models.controlnets.refresh()
        # usable files only (as the UI's dropdown); the others with their reason beside
        return {"model_list": [f.title for f in svc.models.controlnets.usable()],
                "unusable": svc.models.controlnets.unusable()}

    @r.get("/module_list")
    def module_list() -> dict[str, list[str]]:
        return {"module_list": list(PREPROCESSORS)}

    @r.post("/detect")
    def detect(body: ControlNetDetectRequest) -> dict[str, Any]:
        module = body.controlnet_module or "none"
        try:
            out = []
            for img in body.controlnet_input_images:
                arr = preprocess(module, decode_image(img), body.controlnet_processor_res or 512,
                                 body.controlnet_threshold_a or -1, body.controlnet_threshold_b or -1)
                out.append(encode_png(Image.fromarray(arr)))
        except ControlNetError as e:
            raise HTTPException(422, str(e)) from None
        return {"images": out, "info": "Success"}

    return r


def build_router(svc: Services) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])

    @r.get("/sd-models")
    def sd_models() -> list[dict[str, Any]]:
        svc.registry.refresh()
        return [{"title": c.title, "model_name": c.model_name, "hash": c.shorthash, "sha256": c.sha256,
                 "filename": str(c.path), "config": None, **({"error": c.error} if c.error else {})}
                for c in svc.registry.list()]

    @r.get("/samplers")
    def samplers() -> list[dict[str, Any]]:
        return [{"name": s.name, "aliases": list(s.aliases), "options": dict(s.options)} for s in SAMPLERS]

    @r.get("/schedulers")
    def schedulers() -> list[dict[str, Any]]:
        return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None,
                 "default_rho": s.default_rho, "need_inner_model": s.need_inner_model} for s in SCHEDULE_TYPES]

    @r.get("/upscalers")
    def upscalers() -> list[dict[str, Any]]:
        return upscaler_listing(svc.extras)

    @r.get("/latent-upscale-modes")
    def latent_modes() -> list[dict[str, str]]:
        return [{"name": n} for n in LATENT_UPSCALE_MODES]

    @r.get("/prompt-styles")
    def prompt_styles() -> list[dict[str, Any]]:
        svc.styles.reload()  # edits made to styles.csv by hand show up without a restart
        return [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                for s in svc.styles.styles.values()]

    @r.get("/loras")
    def loras() -> list[dict[str, Any]]:
        svc.models.loras.refresh()
        cur = svc.models.current
        return svc.models.loras.listing(cur.sd.family if cur is not None else None)

    @r.post("/refresh-loras")
    def refresh_loras() -> None:
        svc.models.loras.refresh()

    @r.get("/sd-vae")
    def sd_vae() -> list[dict[str, Any]]:
        return svc.models.vae_listing()

    @r.post("/refresh-vae")
    def refresh_vae() -> None:
        return None  # the VAE list is read from the folders on every call

    @r.get("/hypernetworks")
    def hypernetworks() -> list[dict[str, Any]]:
        svc.models.hypernetworks.refresh()
        cur = svc.models.current
        return svc.models.hypernetworks.listing(cur.sd.family if cur is not None else None)

    @r.get("/embeddings")
    def embeddings() -> dict[str, Any]:
        """A1111's shape: usable embeddings of the loaded model, and the skipped ones (before the first
        load: judged against the selected checkpoint's text-encoder widths read from its header)."""
        return embeddings_listing(svc)

    @r.post("/refresh-embeddings")
    def refresh_embeddings() -> None:
        cur = svc.models.current
        if cur is not None and getattr(cur.encoder, "embeddings", None) is not None:
            cur.encoder.embeddings.load()

    @r.get("/scripts")
    def scripts() -> dict[str, list[str]]:
        cat = svc.pipeline.scripts
        return {"txt2img": [t.lower() for t in cat.txt2img.titles()],
                "img2img": [t.lower() for t in cat.img2img.titles()]}

    @r.get("/script-info")
    def script_info() -> list[dict[str, Any]]:
        return svc.pipeline.scripts.script_info()

    @r.get("/memory")
    def memory() -> dict[str, Any]:
        return svc.memory_report()

    @r.get("/cmd-flags")
    def flags() -> dict[str, Any]:
        return svc.cmd_flags()

    @r.get("/options")
    def get_options() -> dict[str, Any]:
        return svc.options()

    @r.post("/options", dependencies=[admin_only(svc.accounts, "change settings")])
    def set_options(body: dict[str, Any]) -> None:
        """Set options. Unknown keys (a typo, or an option of an extension that is not loaded) are
        refused with 422 naming them, before anything changes. So that what GET /options returns can
        be posted back: None values change nothing (None is never stored), the read-only
        `sd_checkpoint_hash` is skipped, and keys config.json holds for an extension that has not
        registered them pass when their value is unchanged."""
        settings = svc.settings
        body = {k: v for k, v in dict(body).items() if v is not None and k != "sd_checkpoint_hash"}
        body = {k: v for k, v in body.items()
                if settings.is_known(k) or k not in settings.values or settings.values[k] != v}
        unknown = settings.unknown_keys(body)
        if unknown:
            raise HTTPException(422, f"unknown option{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                                     "(not an option of this web UI or of a loaded extension)")
        guarded = [k for k in ("disabled_extensions", "disable_all_extensions") if k in body]
        if guarded:
            from webui.extensions.manage import is_guarded
            refusal = is_guarded(svc.args)
            if refusal:  # enabling an extension runs its code: the same rule as the Extensions tab
                raise HTTPException(403, f"{', '.join(guarded)}: {refusal}")
        ckpt = body.pop("sd_model_checkpoint", None)
        try:
            for k, v in body.items():
                check_option_value(svc.settings, k, v)  # also refuses NaN, infinities, |v| >= 2**63
            if ckpt:
                svc.select_checkpoint(str(ckpt))
            svc.settings.update(body)
        except (SettingsError, RequestValueError) as e:
            raise HTTPException(400, str(e)) from None
        except ModelLoadError as e:
            raise HTTPException(400, str(e)) from None
        return None

    def check_scripts(req: Txt2ImgRequest) -> None:
        """An unknown script_name or always-on script is a 422 naming it, before anything is queued."""
        runner = svc.pipeline.scripts.runner(isinstance(req, Img2ImgRequest))
        try:
            runner.check_request(req.script_name, req.alwayson_scripts)
        except GenerationError as e:
            raise HTTPException(422, str(e)) from None

    def respond(req: Txt2ImgRequest, result: Any, params: dict[str, Any]) -> dict[str, Any]:
        images: list[str] = []
        if req.send_images:
            shown, texts = result.shown(with_grids=bool(svc.settings.get("return_grid")))
            images = [encode_png(im, t) for im, t in zip(shown, texts)]  # A1111: grids first
        for k in ("width", "height"):  # omitted sizes were filled from the model: echo what ran
            if params.get(k) is None:
                params[k] = result.info.get(k)
        info = result.info_for(with_grids=bool(svc.settings.get("return_grid")))
        return {"images": images, "parameters": json_safe(params), "info": json.dumps(info, ensure_ascii=False)}

    @r.post("/txt2img")
    async def txt2img(req: Txt2ImgRequest, request: Request) -> dict[str, Any]:
        owner = caller_from_scope(request.scope, svc.accounts).owner

        def submit() -> Job:
            check_scripts(req)
            if req.infotext:
                _fill_from_infotext(req, svc)
            return svc.submit_txt2img(req, save=req.save_images, label="txt2img (api)", owner=owner)
        result = await await_job(submit)
        return await run_in_threadpool(respond, req, result, req.model_dump(exclude={"infotext"}))

    @r.post("/img2img")
    async def img2img(req: Img2ImgRequest, request: Request) -> dict[str, Any]:
        owner = caller_from_scope(request.scope, svc.accounts).owner
        params: dict[str, Any] = {}

        def submit() -> Job:
            check_scripts(req)
            if req.infotext:
                _fill_from_infotext(req, svc)
            if not req.init_images:
                raise HTTPException(422, "init_images is empty: img2img needs at least one base64 image")
            params.update(req.model_dump(exclude={"infotext"}))
            if not req.include_init_images:  # A1111 echoes the request without the images unless asked
                params["init_images"] = None
                params["mask"] = None
            run = req.model_copy(update={
                "init_images": [decode_image(im, f"init_images[{i}]") for i, im in enumerate(req.init_images)],
                "mask": decode_image(req.mask, "mask") if req.mask else None,
                "latent_mask": decode_image(req.latent_mask, "latent_mask") if req.latent_mask else None})
            return svc.submit_img2img(run, save=req.save_images, label="img2img (api)", owner=owner)
        result = await await_job(submit)
        return await run_in_threadpool(respond, req, result, params)

    @r.get("/progress")
    async def progress(request: Request, skip_current_image: bool = False) -> dict[str, Any]:
        """The running job, as A1111, when it is the caller's (or the caller is an admin, or there are
        no accounts); otherwise the idle answer with the caller's own queued count. Answered on the
        event loop (no thread hop) except the preview's PNG, which is encoded in a worker thread."""
        caller = caller_from_scope(request.scope, svc.accounts)
        mine = [j for j in svc.queue.running_jobs() if caller.may_act_on(j.owner)]  # several with scale-out
        state = mine[0].state if mine else None
        queued = svc.queue.queued() if caller.admin else svc.queue.queued(caller.owner)
        image = state.current_image if state is not None and not skip_current_image else None
        out = progress_dict(state, queued, True)
        if image is not None:
            out["current_image"] = await run_in_threadpool(encode_png, image)
        return out

    def stop(request: Request, body: StopRequest | None, action: str) -> dict[str, Any]:
        caller = caller_from_scope(request.scope, svc.accounts)
        if body is not None and body.id_task:
            job = svc.queue.get(body.id_task)
            if action == "skip" and job is not None and job.state.started and caller.may_act_on(job.owner):
                job.state.skip()  # a running job skips its current image; a queued one is cancelled below
                return {"id_task": body.id_task, "result": "skipped"}
            return stop_task(svc.queue, caller, body.id_task)
        # A1111: the running job (with scale-out: every running one); with accounts only the caller's own
        for job in [j for j in svc.queue.running_jobs() if caller.may_act_on(j.owner)]:
            if action == "interrupt":
                job.state.interrupt()
            else:
                job.state.skip()
        return {}

    # flags on the job only (no lock held across anything slow): answered on the event loop
    @r.post("/interrupt")
    async def interrupt(request: Request, body: StopRequest | None = Body(None)) -> dict[str, Any]:
        return stop(request, body, "interrupt")

    @r.post("/skip")
    async def skip(request: Request, body: StopRequest | None = Body(None)) -> dict[str, Any] | None:
        return stop(request, body, "skip") or None

    @r.post("/png-info")
    def png_info(body: PngInfoRequest) -> dict[str, Any]:
        if not body.image.strip():
            raise HTTPException(400, "image is empty")
        img = decode_image(body.image)
        text, items = infotext.read_info_from_image(img)
        params = infotext.parse_generation_parameters(text) if text else {}
        return {"info": text or "", "items": items, "parameters": params}

    @r.post("/refresh-checkpoints")
    def refresh_checkpoints() -> None:
        svc.registry.refresh()
        return None

    # the loaded checkpoint is everybody's: only an admin loads or unloads it (refreshing the list is harmless)
    @r.post("/reload-checkpoint", dependencies=[admin_only(svc.accounts, "reload the checkpoint")])
    def reload_checkpoint() -> None:
        try:
            svc.queue.submit(lambda s: svc.models.reload(), label="reload checkpoint").result()
        except ModelLoadError as e:
            raise HTTPException(400, str(e)) from None
        return None

    @r.post("/unload-checkpoint", dependencies=[admin_only(svc.accounts, "unload the checkpoint")])
    def unload_checkpoint() -> None:
        svc.queue.submit(lambda s: svc.models.unload(), label="unload checkpoint").result()
        return None

    return r


def _fill_from_infotext(req: Txt2ImgRequest, svc: Services) -> None:
    """A1111's `infotext` request field: values parsed from it fill fields the request left at defaults;
    settings it names override those that differ from the current ones (A1111's get_override_settings:
    infotext_skip_pasting fields left out, the checkpoint only with disable_weights_auto_swap off)."""
    current = svc.options()
    skip = list(current.get("infotext_skip_pasting") or [])
    parsed = infotext.infotext_to_request(infotext.parse_generation_parameters(req.infotext or "", skip_fields=skip),
                                          current)
    defaults = Txt2ImgRequest()
    for k, v in parsed.items():
        if k == "override_settings":
            merged = dict(v)
            merged.update(req.override_settings or {})
            req.override_settings = merged
        elif hasattr(defaults, k) and getattr(req, k) == getattr(defaults, k):
            setattr(req, k, v)


def install_api(app: FastAPI, svc: Services) -> None:
    app.include_router(build_router(svc))
    app.include_router(build_controlnet_router(svc))
    app.include_router(build_extras_router(svc.extras, svc.accounts))
    app.include_router(build_extensions_router(svc))
    app.include_router(build_train_router(svc))
    app.include_router(build_modules_router(svc))
    app.include_router(build_interrogate_router(svc))
    if getattr(svc.args, "api_server_stop", False):  # A1111: these routes exist only with the flag
        app.include_router(build_server_router(lambda: svc.stop_server() if svc.stop_server else None),
                           dependencies=[admin_only(svc.accounts, "stop or restart the server")])

    @app.middleware("http")
    async def process_time(request: Request, call_next: Any) -> Any:
        t0 = time.perf_counter()
        response = await call_next(request)
        response.headers["X-Process-Time"] = f"{time.perf_counter() - t0:.4f}"
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler, except that the refused input it echoes may be NaN or infinite
        # (JSON's NaN/Infinity literals parse to them), which its JSON encoder cannot write
        return JSONResponse(status_code=422, content={"detail": json_safe(jsonable_encoder(exc.errors()))})

    @app.exception_handler(LimitError)
    async def limit_error(request: Request, exc: LimitError) -> JSONResponse:
        # a request over one of the server's limits (webui/services/limits.py): 429 or 422, naming it
        return JSONResponse(status_code=exc.status,
                            content={"error": "LimitError", "detail": str(exc), "body": "", "errors": ""})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code,
                            content={"error": type(exc).__name__, "detail": exc.detail, "body": "", "errors": ""})
