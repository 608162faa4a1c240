"""POST /sdapi/v1/interrogate (A1111): {image, model} -> {caption}, from local model folders only."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from webui.serving.caller import caller_from_scope
from webui.imaging.decode import ImageInputError, decode_base64_image
from webui.imaging.interrogate import InterrogateError, Interrogator


class InterrogateRequest(BaseModel):
    image: str = ""
    model: str = "clip"


def build_interrogate_router(svc: Any) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])
    device = str(getattr(getattr(svc, "memory", None), "device", "cpu"))
    interrogator = Interrogator(svc.paths.models_dir, device=device, option=svc.settings.get)

    @r.post("/interrogate")
    def interrogate(req: InterrogateRequest, request: Request) -> dict[str, str]:
        if not req.image:
            raise HTTPException(422, "image is empty: send a base64 picture")
        try:
            image = decode_base64_image(req.image, "image")
        except ImageInputError as e:
            raise HTTPException(400, str(e)) from None
        try:
            # through the job queue: the models never load beside a generation
            job = svc.queue.submit(lambda state: interrogator.interrogate(image, req.model), label="interrogate",
                                   owner=caller_from_scope(request.scope, svc.accounts).owner)
            caption = job.result()
        except InterrogateError as e:
            raise HTTPException(404 if "unknown interrogation model" in str(e) else 400, str(e)) from None
        return {"caption": caption}

    return r
