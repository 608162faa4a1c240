"""The Image Browser over HTTP: list the output folders, fetch an image or its thumbnail, delete to
the trash. Thin routes over `webui.services.output_browser`; files are named `<kind>/<path>` as the
listing gives them, and a name that leaves its output folder is refused (400)."""
from __future__ import annotations

import mimetypes
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse

from webui.api.admin import require_admin
from webui.services.output_browser import ALL, OutputBrowser, OutputBrowserError, OutputNotFound, page_json


def _http_error(e: OutputBrowserError) -> HTTPException:
    return HTTPException(status_code=404 if isinstance(e, OutputNotFound) else 400, detail=str(e))


def build_outputs_router(svc: Any) -> APIRouter:
    router = APIRouter(tags=["outputs"])

    def browser() -> OutputBrowser:
        return OutputBrowser.for_services(svc)  # options may have moved a folder since the last call

    @router.get("/webui/v1/outputs")
    def list_outputs(kind: str = Query("txt2img", description="txt2img, img2img, extras, txt2img-grids, "
                                                                 "img2img-grids, saved or all"),
                     folder: str = Query("", description="a date subfolder; empty = every folder of the kind"),
                     page: int = Query(1, ge=1, le=10**9, description="1-based; past the last page is empty"),
                     search: str = Query("", max_length=1000,
                                         description="case-insensitive text the infotext must contain")) -> dict:
        """One page of images, newest first, with sizes, times and the infotext's first line."""
        b = browser()
        try:
            if folder and kind == ALL:
                raise OutputBrowserError("a folder needs a kind other than 'all'")
            return page_json(b, b.page(kind, folder, page, search))
        except OutputBrowserError as e:
            raise _http_error(e) from None

    @router.get("/webui/v1/outputs/file")
    def get_file(path: str = Query(..., max_length=4096, description="<kind>/<path> as the listing names it"),
                 thumb: bool = Query(False, description="a small JPEG instead of the image")) -> FileResponse:
        b = browser()
        try:
            if thumb:
                return FileResponse(b.thumbnail(path), media_type="image/jpeg",
                                    headers={"Cache-Control": "max-age=86400"})
            f = b.resolve(path)
        except OutputBrowserError as e:
            raise _http_error(e) from None
        media = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
        return FileResponse(f.path, media_type=media)

    @router.delete("/webui/v1/outputs/file")
    def delete_file(request: Request, path: str = Query(..., max_length=4096)) -> dict:
        """Moves the image and its .txt sidecar to <data dir>/trash/<kind>/... (with accounts, admins
        only: outputs have no owners, and one user must not delete another's pictures)"""
        require_admin(request, svc.accounts, "delete images")
        b = browser()
        try:
            dest = b.trash(path)
        except OutputBrowserError as e:
            raise _http_error(e) from None
        except OSError as e:
            raise HTTPException(status_code=409, detail=f"could not move {path!r} to the trash: {e}") from None
        return {"path": path, "trash": dest.relative_to(b.data_dir).as_posix()}

    return router
