"""img2img and inpainting as a service: the same pipeline as txt2img with an `Img2ImgRequest`
(the differences live in `webui.processing.img2img_stage`)."""
from __future__ import annotations

from webui.imaging.resize import RESIZE_MODES
from webui.processing.img2img_stage import Img2ImgPrep
from webui.services.txt2img import Txt2ImgService


class Img2ImgService(Txt2ImgService):
    mode = "img2img"


__all__ = ["Img2ImgService", "Img2ImgPrep", "RESIZE_MODES"]
