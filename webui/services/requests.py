"""The request models live with the pipeline (`webui.processing.requests`); the skins import them from here."""
from webui.processing.requests import (IMAGE_UPSCALERS, INPAINTING_FILL, LATENT_UPSCALE_MODES, Img2ImgRequest,
                                       Txt2ImgRequest)

__all__ = ["IMAGE_UPSCALERS", "INPAINTING_FILL", "LATENT_UPSCALE_MODES", "Img2ImgRequest", "Txt2ImgRequest"]
