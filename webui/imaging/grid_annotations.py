"""Image grids with A1111's labels: ``image_grid``, ``draw_grid_annotations``, ``draw_prompt_matrix``
and the X/Y/Z plot's sub-grid / Z-grid composition, following A1111 1.10's ``modules/images.py``
and ``scripts/xyz_grid.py``.

Layout (A1111's): the font size is ``(cell_w + cell_h) // 25`` and the line spacing half of it;
column labels sit in a band above the grid (its height is the tallest column label plus two line
spacings), row labels in a band left of it, ``cell_w * 3 // 4`` wide. A band whose labels are all
empty is left out. Labels are word-wrapped to the cell width (row labels to the band width) with
the initial font; a line that is still too wide (a single long word) is drawn with a smaller font
until it fits. Inactive labels (the prompt matrix's "off" parts) are grey with a line through them.
``margin`` puts that many background pixels between cells.

Fonts never come from the network: ``get_font`` tries a font file named by the caller, then
DejaVu Sans from the system, then Pillow's built-in font.
"""
from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, Union

from PIL import Image, ImageColor, ImageDraw, ImageFont

log = logging.getLogger(__name__)

Color = Union[str, tuple[int, int, int]]
AnyFont = Union[ImageFont.FreeTypeFont, ImageFont.ImageFont]

# A1111's defaults for the grid_text_active_color / grid_text_inactive_color / grid_background_color options
COLOR_ACTIVE: tuple[int, int, int] = (0, 0, 0)
COLOR_INACTIVE: tuple[int, int, int] = (153, 153, 153)
COLOR_BACKGROUND: tuple[int, int, int] = (255, 255, 255)

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian / Ubuntu
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",  # Fedora
    "/usr/share/fonts/TTF/DejaVuSans.ttf",  # Arch
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/local/share/fonts/DejaVuSans.ttf",
)
# bare names Pillow looks up in the system font folders
FONT_NAMES = ("DejaVuSans.ttf",)
# a font shipped next to this module, if one is ever added, wins over the system one
_PACKAGED_FONT_DIR = Path(__file__).with_name("fonts")


def style_from_options(opt: Callable[[str], Any]) -> dict[str, Any]:
    """``draw_grid_annotations`` keywords from A1111's font / grid_text_active_color /
    grid_text_inactive_color / grid_background_color options (``opt(key)`` reads one); a colour
    Pillow cannot read falls back to A1111's default, with a message in the log."""
    def colour(key: str, default: tuple[int, int, int]) -> Color:
        value = str(opt(key) or "").strip()
        try:
            return ImageColor.getrgb(value)[:3] if value else default
        except ValueError:
            log.warning("option %s: %r is no colour; using the default", key, value)
            return default
    return {"font_path": str(opt("font") or "").strip() or None,
            "color_active": colour("grid_text_active_color", COLOR_ACTIVE),
            "color_inactive": colour("grid_text_inactive_color", COLOR_INACTIVE),
            "background": colour("grid_background_color", COLOR_BACKGROUND)}


def _rgb(color: Color) -> tuple[int, int, int]:
    rgb = ImageColor.getrgb(color) if isinstance(color, str) else tuple(color)
    return rgb[:3]  # type: ignore[return-value]


@functools.lru_cache(maxsize=256)
def _load_font(size: int, path: str | None) -> AnyFont:
    candidates: list[str] = []
    if path:
        candidates.append(path)
    if _PACKAGED_FONT_DIR.is_dir():
        candidates += sorted(str(p) for p in _PACKAGED_FONT_DIR.glob("*.ttf"))
    candidates += [p for p in FONT_CANDIDATES if os.path.isfile(p)]
    candidates += FONT_NAMES
    for candidate in candidates:
        try:
            return ImageFont.truetype(candidate, size)
        except OSError:
            if candidate == path:
                log.warning("grid font %s could not be loaded; using the default font", path)
    log.info("no TrueType font found for grid labels; using Pillow's built-in font")
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed-size bitmap font
        return ImageFont.load_default()


def get_font(size: int, path: str | os.PathLike[str] | None = None) -> AnyFont:
    """A font of ``size`` pixels for grid labels: ``path`` if loadable, else DejaVu Sans, else Pillow's own."""
    return _load_font(max(1, int(size)), os.fspath(path) if path else None)


@dataclass
class GridAnnotation:
    """One label line; ``is_active=False`` draws it grey and struck through (prompt matrix parts that are off)."""

    text: str = ""
    is_active: bool = True
    size: tuple[int, int] | None = None
    allowed_width: int = 0


AnnotationLike = Union[GridAnnotation, str]


def _as_annotations(groups: Sequence[Sequence[AnnotationLike] | AnnotationLike]) -> list[list[GridAnnotation]]:
    out = []
    for group in groups:
        if isinstance(group, (str, GridAnnotation)):
            group = [group]
        out.append([a if isinstance(a, GridAnnotation) else GridAnnotation(str(a)) for a in group])
    return out


# ---------------------------------------------------------------- grid


def grid_rows(count: int, batch_size: int = 1, n_rows: int = -1, prevent_empty_spots: bool = False) -> int:
    """Rows of an A1111 grid of ``count`` images when the caller names none (the "Grid row count" option n_rows):
    n_rows > 0 is taken as is, 0 means batch_size, -1 means round(sqrt(count)) - or with "Prevent empty spots",
    the largest divisor of count not above sqrt(count)."""
    if count <= 0:
        raise ValueError("a grid needs at least one image")
    if n_rows > 0:
        rows = n_rows
    elif n_rows == 0:
        rows = batch_size
    elif prevent_empty_spots:
        rows = math.floor(math.sqrt(count))
        while count % rows != 0:
            rows -= 1
    else:
        rows = round(math.sqrt(count))
    return max(1, min(rows, count))


def image_grid(images: Sequence[Image.Image], rows: int | None = None, cols: int | None = None, *,
               batch_size: int = 1, n_rows: int = -1, prevent_empty_spots: bool = False,
               background: Color = COLOR_BACKGROUND) -> Image.Image:
    """Paste images row by row into one RGB image.

    Cells are the size of the largest image; smaller ones are centred. Without ``rows`` and ``cols``
    the row count follows A1111's ``n_rows`` rule (see ``grid_rows``); with only ``cols``, rows are
    as many as needed; columns are always ``ceil(len / rows)`` unless given.
    """
    if not images:
        raise ValueError("image_grid needs at least one image")
    n = len(images)
    if rows is None:
        rows = math.ceil(n / cols) if cols else grid_rows(n, batch_size, n_rows, prevent_empty_spots)
    rows = max(1, min(int(rows), n))  # A1111 clamps rows to the image count
    if cols is None:
        cols = math.ceil(n / rows)
    if rows * cols < n:
        raise ValueError(f"a {cols}x{rows} grid cannot hold {n} images")

    w = max(im.width for im in images)
    h = max(im.height for im in images)
    grid = Image.new("RGB", (cols * w, rows * h), _rgb(background))
    for i, im in enumerate(images):
        dx = (w - im.width) // 2
        dy = (h - im.height) // 2
        grid.paste(im if im.mode in ("RGB", "L") else im.convert("RGB"), (i % cols * w + dx, i // cols * h + dy))
    return grid


# ---------------------------------------------------------------- labels


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: AnyFont, max_width: float) -> list[str]:
    # greedy word wrap; a word wider than the line stays alone on its line (its font shrinks later)
    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if draw.textlength(candidate, font=font) <= max_width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def _text_width(draw: ImageDraw.ImageDraw, text: str, font: AnyFont) -> int:
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def draw_grid_annotations(im: Image.Image, width: int, height: int,
                          hor_texts: Sequence[Sequence[AnnotationLike] | AnnotationLike],
                          ver_texts: Sequence[Sequence[AnnotationLike] | AnnotationLike],
                          margin: int = 0, *, font_size: int | None = None, font_path: str | None = None,
                          color_active: Color = COLOR_ACTIVE, color_inactive: Color = COLOR_INACTIVE,
                          background: Color = COLOR_BACKGROUND) -> Image.Image:
    """Add column labels above and row labels left of a grid of ``width`` x ``height`` cells.

    ``hor_texts[col]`` / ``ver_texts[row]`` are lists of GridAnnotation (plain strings are taken as
    active labels). Their counts must match the grid's columns and rows. ``font_size`` overrides
    A1111's ``(width + height) // 25`` (which is 5 px for 64x64 cells). Inputs are not modified.
    """
    hor = _as_annotations(hor_texts)
    ver = _as_annotations(ver_texts)
    cols = im.width // width
    rows = im.height // height
    if cols != len(hor):
        raise ValueError(f"bad number of horizontal texts: {len(hor)}; must be {cols}")
    if rows != len(ver):
        raise ValueError(f"bad number of vertical texts: {len(ver)}; must be {rows}")

    active, inactive, bg = _rgb(color_active), _rgb(color_inactive), _rgb(background)
    fontsize = int(font_size) if font_size else (width + height) // 25
    fontsize = max(1, fontsize)
    line_spacing = fontsize // 2
    font = get_font(fontsize, font_path)

    pad_left = 0 if sum(len(a.text) for group in ver for a in group) == 0 else width * 3 // 4

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1), bg))

    def layout(groups: list[list[GridAnnotation]], allowed: int) -> list[list[GridAnnotation]]:
        laid = []
        for group in groups:
            lines = [GridAnnotation(t, a.is_active) for a in group for t in _wrap(measure, a.text, font, allowed)]
            for line in lines:
                left, top, right, bottom = measure.textbbox((0, 0), line.text, font=font)
                line.size = (right - left, bottom - top)
                line.allowed_width = allowed
            laid.append(lines)
        return laid

    hor = layout(hor, width)
    ver = layout(ver, pad_left)

    hor_heights = [sum(line.size[1] + line_spacing for line in lines) - line_spacing for lines in hor]
    # A1111 sums only the line heights here (spacing left out), so multi-line row labels sit a little low
    ver_heights = [sum(line.size[1] for line in lines) for lines in ver]
    pad_top = 0 if sum(hor_heights) == 0 else max(hor_heights) + line_spacing * 2

    size = (im.width + pad_left + margin * (cols - 1), im.height + pad_top + margin * (rows - 1))
    result = Image.new("RGB", size, bg)
    for row in range(rows):
        for col in range(cols):
            cell = im.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))

    draw = ImageDraw.Draw(result)

    def draw_lines(cx: float, y: float, lines: list[GridAnnotation]) -> None:
        for line in lines:
            fnt, size = font, fontsize
            # shrink a line that the wrap could not make fit (one long word)
            while size > 1 and _text_width(draw, line.text, fnt) > line.allowed_width:
                size -= 1
                fnt = get_font(size, font_path)
                if not isinstance(fnt, ImageFont.FreeTypeFont):
                    break  # Pillow's bitmap fallback has one size only
            colour = active if line.is_active else inactive
            if line.text:
                left, top, right, bottom = draw.textbbox((0, 0), line.text, font=fnt)
                # centre the ink box on (cx, middle of this line's slot); works for bitmap fonts too (no anchors)
                mid_y = y + line.size[1] / 2
                origin = (cx - (right - left) / 2 - left, mid_y - (bottom - top) / 2 - top)
                draw.text(origin, line.text, font=fnt, fill=colour)
            if not line.is_active:
                mid = y + line.size[1] // 2
                draw.line((cx - line.size[0] // 2, mid, cx + line.size[0] // 2, mid), fill=inactive, width=4)
            y += line.size[1] + line_spacing

    for col in range(cols):
        draw_lines(pad_left + (width + margin) * col + width / 2, pad_top / 2 - hor_heights[col] / 2, hor[col])
    for row in range(rows):
        draw_lines(pad_left / 2, pad_top + (height + margin) * row + height / 2 - ver_heights[row] / 2, ver[row])
    return result


def draw_prompt_matrix(im: Image.Image, width: int, height: int, all_prompts: Sequence[str], margin: int = 0,
                       **kwargs) -> Image.Image:
    """Label a prompt-matrix grid. ``all_prompts`` is the prompt split on ``|``; the first part is fixed.

    The first ceil(n/2) variable parts label the columns, the rest the rows; each label lists every
    part, grey and struck through where the combination leaves it out. Column index = low bits of
    the combination number, row index = high bits, matching ``prompt_matrix_combinations``.
    """
    parts = list(all_prompts[1:])
    boundary = math.ceil(len(parts) / 2)
    horiz, vert = parts[:boundary], parts[boundary:]
    hor_texts = [[GridAnnotation(t, is_active=bool(pos & (1 << i))) for i, t in enumerate(horiz)]
                 for pos in range(1 << len(horiz))]
    ver_texts = [[GridAnnotation(t, is_active=bool(pos & (1 << i))) for i, t in enumerate(vert)]
                 for pos in range(1 << len(vert))]
    return draw_grid_annotations(im, width, height, hor_texts, ver_texts, margin, **kwargs)


# ---------------------------------------------------------------- X/Y/Z plot labels and grid


def format_value(value: object) -> str:
    """A1111's format_value: the value itself, floats rounded to 8 decimals (so 0.30000000000000004 reads 0.3)."""
    if isinstance(value, float):
        value = round(value, 8)
    return str(value)


def format_value_add_label(label: str, value: object) -> str:
    """A1111's default axis label: ``"<axis label>: <value>"`` (e.g. ``"Steps: 20"``)."""
    return f"{label}: {format_value(value)}"


def format_value_join_list(value: Sequence[str]) -> str:
    """Prompt order labels: the permutation joined with ", "."""
    return ", ".join(value)


def format_remove_path(value: str) -> str:
    """Checkpoint-name labels: the file name without its folders."""
    return os.path.basename(value)


def format_nothing(value: object = None) -> str:
    """The "Nothing" axis has no label (so no label band is drawn for it)."""
    return ""


def draw_xyz_grid(cells: Sequence[Image.Image | None], x_labels: Sequence[str], y_labels: Sequence[str],
                  z_labels: Sequence[str], draw_legend: bool = True, include_sub_grids: bool = False,
                  margin_size: int = 0, include_lone_images: bool = False, **annotation_kwargs) -> list[Image.Image]:
    """Compose an X/Y/Z plot the way A1111's draw_xyz_grid does.

    ``cells`` is flat, index ``ix + iy * nx + iz * nx * ny`` (``axis_values.cell_index``), with
    ``nx, ny, nz = len(x_labels), len(y_labels), len(z_labels)``; a None cell (a failed generation)
    becomes a black image of the first cell's size. For each z value an X/Y sub-grid is made
    (``ny`` rows, labelled when ``draw_legend``, ``margin_size`` between cells); the sub-grids are
    then set side by side in one row with the z labels above them (no margin, no row labels).

    Returns ``[full grid]``, then the sub-grids if ``include_sub_grids``, then the single cells if
    ``include_lone_images`` - the order of A1111's result images.
    """
    nx, ny, nz = len(x_labels), len(y_labels), len(z_labels)
    if min(nx, ny, nz) == 0:
        raise ValueError("every axis needs at least one value (the Nothing axis has one empty label)")
    if len(cells) != nx * ny * nz:
        raise ValueError(f"{len(cells)} cells for a {nx}x{ny}x{nz} plot; expected {nx * ny * nz}")
    first = next((c for c in cells if c is not None), None)
    if first is None:
        raise ValueError("X/Y/Z plot: no cell produced an image")
    filled = [c if c is not None else Image.new(first.mode, first.size) for c in cells]
    if any(c is None for c in cells):
        log.warning("X/Y/Z plot: %d of %d cells failed; drawn black", sum(c is None for c in cells), len(cells))

    hor_texts = [[GridAnnotation(str(x))] for x in x_labels]
    ver_texts = [[GridAnnotation(str(y))] for y in y_labels]
    z_texts = [[GridAnnotation(str(z))] for z in z_labels]

    sub_grids = []
    for iz in range(nz):
        chunk = filled[iz * nx * ny:(iz + 1) * nx * ny]
        grid = image_grid(chunk, rows=ny)
        if draw_legend:
            cell_w = max(c.width for c in chunk)
            cell_h = max(c.height for c in chunk)
            grid = draw_grid_annotations(grid, cell_w, cell_h, hor_texts, ver_texts, margin_size, **annotation_kwargs)
        sub_grids.append(grid)

    z_grid = image_grid(sub_grids, rows=1)
    if draw_legend:
        sub_w = max(g.width for g in sub_grids)
        sub_h = max(g.height for g in sub_grids)
        z_grid = draw_grid_annotations(z_grid, sub_w, sub_h, z_texts, [[GridAnnotation()]], **annotation_kwargs)

    out = [z_grid]
    if include_sub_grids:
        out += sub_grids
    if include_lone_images:
        out += filled
    return out
