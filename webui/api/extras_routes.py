"""A1111's Extras API: /sdapi/v1/extra-single-image, /extra-batch-images, /realesrgan-models,
/face-restorers.

As in A1111 the API does not save files; it returns PNGs (base64) that keep the source's text
chunks plus the `postprocessing` infotext, and `html_info` (that infotext as HTML).
"""
from __future__ import annotations

import base64
import io
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from PIL import Image, PngImagePlugin
from pydantic import BaseModel, ConfigDict, Field

from webui.imaging.decode import ImageInputError, decode_base64_image
from webui.imaging.upscalers import UpscalerError
from webui.serving.accounts import NO_ACCOUNTS, Accounts
from webui.serving.caller import caller_from_scope
from webui.services.extras import ExtrasError, ExtrasParams, ExtrasResult, ExtrasService


class ExtrasBaseRequest(BaseModel):
    """A1111's field names and defaults (modules/api/models.py). NaN and infinities are refused (422)."""
    model_config = ConfigDict(allow_inf_nan=False)

    resize_mode: Literal[0, 1] = Field(0, description="0: upscale by upscaling_resize; 1: to upscaling_resize_w x _h")
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1, description="GFPGAN face restoration blended in at this "
                                     "visibility (0 = off); needs a file in models/GFPGAN")
    codeformer_visibility: float = Field(0, ge=0, le=1, description="CodeFormer face restoration blended in at "
                                         "this visibility (0 = off); needs a file in models/Codeformer")
    codeformer_weight: float = Field(0, ge=0, le=1, description="CodeFormer weight: 0 = maximum effect, 1 = minimum")
    upscaling_resize: float = Field(2, gt=0, le=8)
    upscaling_resize_w: int = Field(512, ge=1, le=8192)
    upscaling_resize_h: int = Field(512, ge=1, le=8192)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1)
    upscale_first: bool = False
    max_side_length: int = Field(0, ge=0, description="Scale by: longest side limit, 0 = no limit")

    def params(self) -> ExtrasParams:
        return ExtrasParams(resize_mode=self.resize_mode, upscaling_resize=self.upscaling_resize,
                            max_side_length=self.max_side_length, upscaling_resize_w=self.upscaling_resize_w,
                            upscaling_resize_h=self.upscaling_resize_h, upscaling_crop=self.upscaling_crop,
                            upscaler_1=self.upscaler_1, upscaler_2=self.upscaler_2,
                            extras_upscaler_2_visibility=self.extras_upscaler_2_visibility,
                            upscale_first=self.upscale_first, gfpgan_visibility=self.gfpgan_visibility,
                            codeformer_visibility=self.codeformer_visibility, codeformer_weight=self.codeformer_weight)


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: str = Field("", description="base64 image, with or without a data:image/...;base64, prefix")


class FileData(BaseModel):
    data: str
    name: str = ""


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData] = Field(default_factory=list)


def encode_png_with_chunks(img: Image.Image, chunks: dict[str, str]) -> str:
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info if chunks else None)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _run(svc: ExtrasService, images: list[tuple[Any, str | None]], params: ExtrasParams, label: str,
         owner: str) -> ExtrasResult:
    try:
        return svc.submit(images, params, save=False, label=label, owner=owner).result()
    except (ExtrasError, UpscalerError, ImageInputError) as e:
        raise HTTPException(400, str(e)) from None


def build_extras_router(svc: ExtrasService, accounts: Accounts = NO_ACCOUNTS) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])

    @r.post("/extra-single-image")
    def extra_single_image(req: ExtrasSingleImageRequest, request: Request) -> dict[str, Any]:
        params = req.params()
        try:
            img = decode_base64_image(req.image, "image")
        except ImageInputError as e:
            raise HTTPException(400, str(e)) from None
        res = _run(svc, [(img, None)], params, "extras (api)", caller_from_scope(request.scope, accounts).owner)
        if not res.images:
            raise HTTPException(409, "interrupted" if res.interrupted else "; ".join(res.errors) or "no result")
        return {"image": encode_png_with_chunks(res.images[0], res.pnginfo[0]), "html_info": res.html_info}

    @r.post("/extra-batch-images")
    def extra_batch_images(req: ExtrasBatchImagesRequest, request: Request) -> dict[str, Any]:
        params = req.params()
        if not req.imageList:
            raise HTTPException(422, "imageList is empty: send [{data, name}, ...] with base64 images")
        images: list[tuple[Any, str | None]] = []
        for i, f in enumerate(req.imageList):
            what = f"imageList[{i}]" + (f" ({f.name})" if f.name else "")
            try:
                images.append((decode_base64_image(f.data, what), f.name or None))
            except ImageInputError as e:
                raise HTTPException(400, str(e)) from None
        res = _run(svc, images, params, "extras batch (api)", caller_from_scope(request.scope, accounts).owner)
        return {"images": [encode_png_with_chunks(im, ch) for im, ch in zip(res.images, res.pnginfo)],
                "html_info": res.html_info}

    @r.get("/realesrgan-models")
    def realesrgan_models() -> list[dict[str, Any]]:
        """The usable files of models/RealESRGAN (A1111 lists its download URLs; nothing is downloaded here)."""
        return [{"name": e.name, "path": str(e.path), "scale": e.scale}
                for e in svc.upscalers.list() if e.kind == "RealESRGAN" and not e.error]

    @r.get("/face-restorers")
    def face_restorers() -> list[dict[str, Any]]:
        """A1111's [{name, cmd_dir}] for the restorers whose model file is installed (nothing is
        downloaded here, so one without a file is not offered), plus model_path, the file used."""
        return [item for item in svc.faces.listing() if item.get("model_path")]

    return r


def upscaler_listing(svc: ExtrasService) -> list[dict[str, Any]]:
    """GET /sdapi/v1/upscalers in A1111's shape; unusable files carry an `error` with the reason."""
    out = []
    for e in svc.upscalers.list():
        item: dict[str, Any] = {"name": e.name, "model_name": e.path.stem if e.path else None,
                                "model_path": str(e.path) if e.path else None, "model_url": None,
                                "scale": e.scale if e.scale is not None else (None if e.is_model else 4)}
        if e.architecture:
            item["architecture"] = e.architecture
        if e.error:
            item["error"] = e.error
        out.append(item)
    return out
