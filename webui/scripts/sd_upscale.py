"""img2img's "SD upscale" (A1111): upscale the picture, cut it into model-sized tiles that overlap,
img2img every tile, and join the tiles with ramp-blended seams."""
from __future__ import annotations

from typing import Any, Callable

from PIL import Image

from webui.imaging.resize import flatten
from webui.imaging.tiles import combine_grid, pad_to, split_grid
from webui.processing import output_stage
from webui.processing.context import Processed
from webui.processing.errors import GenerationError
from webui.processing.pipeline import process_images
from webui.processing.prompts_stage import random_seed
from webui.processing.scripts import ArgInfo, Script

# (image, upscaler name, scale) → upscaled image; the Extras upscaler registry provides it
Upscale = Callable[[Image.Image, str, float], Image.Image]


def pil_upscale(img: Image.Image, name: str, scale: float) -> Image.Image:
    """The built-in upscalers alone (tests and a pipeline built without the Extras registry)."""
    size = (int(img.width * scale), int(img.height * scale))
    if name == "Nearest":
        return img.resize(size, Image.Resampling.NEAREST)
    if name in ("Lanczos", "None", "", None):
        return img.resize(size, Image.Resampling.LANCZOS) if size != img.size else img
    raise GenerationError(f"upscaler {name!r} not found")


class SdUpscale(Script):
    def __init__(self, upscale: Upscale = pil_upscale,
                 names: Callable[[], list[str]] = lambda: ["None", "Lanczos", "Nearest"]) -> None:
        self._upscale = upscale
        self.names = names

    def title(self) -> str:
        return "SD upscale"

    def show(self, is_img2img: bool) -> Any:
        return is_img2img

    def arg_infos(self, is_img2img: bool) -> list[ArgInfo]:
        return [ArgInfo("info", None, kind="info", note="Will upscale the image by the selected scale factor, then "
                        "img2img each tile of the size set by Width and Height, overlapping by the tile overlap."),
                ArgInfo("Tile overlap", 64, 0, 256, 16),
                ArgInfo("Upscaler", "Lanczos", choices=self.names(), kind="radio"),
                ArgInfo("Scale Factor", 2.0, 1.0, 4.0, 0.05)]

    def upscale(self, img: Image.Image, name: str, scale: float) -> Image.Image:
        try:
            return self._upscale(img, name, scale)
        except ValueError as e:  # the registry's UpscalerError: unknown or unusable file
            raise GenerationError(f"SD upscale: {e}") from None

    def run(self, p: Any, _info: Any = None, overlap: Any = 64, upscaler: Any = "Lanczos", scale: Any = 2.0,
            *_: Any) -> Processed:
        overlap, scale = int(overlap), float(scale)
        if isinstance(upscaler, int) or (isinstance(upscaler, str) and upscaler.isdigit()):
            names = self.names()  # A1111's UI sends the radio's index
            if not 0 <= int(upscaler) < len(names):
                raise GenerationError(f"SD upscale: upscaler index {upscaler} is not in {names}")
            upscaler = names[int(upscaler)]
        if not 1.0 <= scale <= 8.0:
            raise GenerationError("SD upscale: scale factor must be between 1 and 8")
        if not 0 <= overlap <= 256:
            raise GenerationError("SD upscale: tile overlap must be between 0 and 256")
        model = p.pipeline.models.require()
        tw = int(p.width or model.sd.default_size)
        th = int(p.height or model.sd.default_size)
        src = flatten(p.init_images[0])
        big = self.upscale(src, str(upscaler), scale)
        target = big.size
        grid = split_grid(pad_to(big, tw, th), tw, th, overlap)
        tiles = grid.tiles()
        seed = random_seed() if p.seed in (-1, None) else int(p.seed)
        per_batch = max(1, p.batch_size)
        iterations = max(1, p.n_iter)
        save = not p.do_not_save_samples
        p.extra_generation_params.update({"SD upscale overlap": overlap, "SD upscale upscaler": upscaler})
        p.width, p.height, p.n_iter, p.resize_mode, p.image_mask = tw, th, 1, 0, None
        p.do_not_save_samples = p.do_not_save_grid = True  # the tiles are not saved, the joined image is
        images: list[Image.Image] = []
        infotexts: list[str] = []
        info: dict[str, Any] = {}
        text = ""
        state = p.state
        for n in range(iterations):
            done: list[Image.Image] = []
            batch_seed = seed + n
            for i in range(0, len(tiles), per_batch):
                if state is not None and state.interrupted:
                    break
                part = tiles[i: i + per_batch]
                p.init_images, p.batch_size, p.seed = [t.image for t in part], len(part), batch_seed
                res = process_images(p)
                batch_seed = res.info["seed"] + 1
                done.extend(res.images)
                info = info or res.info
                text = res.infotexts[0]
            if len(done) < len(tiles):
                break
            grid.replace(done)
            images.append(combine_grid(grid).crop((0, 0, *target)))
            infotexts.append(text)
        if not images:
            raise GenerationError("SD upscale was interrupted before a whole image was done")
        paths = []
        p.do_not_save_samples = not save
        if save and p.opt("samples_save"):
            for img, t, s in zip(images, infotexts, range(seed, seed + len(images))):
                path = output_stage.save(p, img, t, s)
                if path is not None:
                    paths.append(path)
        info = dict(info, infotexts=infotexts, width=target[0], height=target[1], index_of_first_image=0,
                    warnings=list(p.warnings))
        return Processed(images, infotexts, info, paths)
