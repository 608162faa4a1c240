"""Grids and their labels (webui/imaging/grid_annotations.py): A1111 1.10's image_grid layout,
draw_grid_annotations bands, draw_prompt_matrix and the X/Y/Z plot's sub-grid / Z-grid composition."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFont

from webui.imaging.grid_annotations import (
    GridAnnotation, draw_grid_annotations, draw_prompt_matrix, draw_xyz_grid, format_nothing, format_remove_path,
    format_value, format_value_add_label, format_value_join_list, get_font, grid_rows, image_grid,
)

COLORS = [(200, 40, 40), (40, 160, 40), (40, 40, 200), (230, 150, 20), (130, 40, 130), (20, 140, 140)]
W = H = 150  # font (150 + 150) // 25 = 12 px, line spacing 6


def cells(n: int, w: int = W, h: int = H) -> list[Image.Image]:
    return [Image.new("RGB", (w, h), COLORS[i % len(COLORS)]) for i in range(n)]


def arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB")).astype(int)


def dark(region: np.ndarray) -> np.ndarray:
    """Pixels that are text ink (black text antialiased on white)."""
    return region.max(axis=-1) < 100


def is_white(region: np.ndarray) -> bool:
    return bool((region == 255).all())


# ------------------------------------------------------------------ image_grid


@pytest.mark.parametrize("n, expected_rows", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2), (6, 2), (9, 3), (12, 3), (20, 4)])
def test_grid_rows_default_is_rounded_sqrt(n, expected_rows):
    assert grid_rows(n) == expected_rows


def test_grid_rows_options():
    assert grid_rows(6, prevent_empty_spots=True) == 2
    assert grid_rows(5, prevent_empty_spots=True) == 1
    assert grid_rows(12, prevent_empty_spots=True) == 3
    assert grid_rows(6, batch_size=3, n_rows=0) == 3
    assert grid_rows(6, n_rows=4) == 4
    assert grid_rows(2, n_rows=4) == 2  # clamped to the image count
    with pytest.raises(ValueError):
        grid_rows(0)


def test_image_grid_sizes_and_placement():
    g = image_grid(cells(5, 40, 30))
    assert g.size == (3 * 40, 2 * 30)  # rows round(sqrt 5) = 2, cols ceil(5/2) = 3
    a = arr(g)
    for i in range(5):
        assert tuple(a[(i // 3) * 30 + 15, (i % 3) * 40 + 20]) == COLORS[i]
    assert tuple(a[45, 100]) == (255, 255, 255)  # the empty spot shows the background
    assert image_grid(cells(6, 10, 10), rows=1).size == (60, 10)
    assert image_grid(cells(6, 10, 10), cols=4).size == (40, 20)
    assert image_grid(cells(6, 10, 10), rows=3, cols=2).size == (20, 30)
    with pytest.raises(ValueError):
        image_grid(cells(6, 10, 10), rows=2, cols=2)
    with pytest.raises(ValueError):
        image_grid([])


def test_image_grid_mixed_sizes_are_centred_in_the_largest_cell():
    big = Image.new("RGB", (40, 40), (255, 0, 0))
    small = Image.new("RGBA", (20, 10), (0, 0, 255, 255))
    g = image_grid([big, small], rows=1, background="black")
    assert g.size == (80, 40) and g.mode == "RGB"
    a = arr(g)
    assert tuple(a[20, 60]) == (0, 0, 255)  # centre of the second cell
    assert tuple(a[2, 42]) == (0, 0, 0)  # outside the small image: background


# ------------------------------------------------------------------ draw_grid_annotations


def test_annotation_bands_have_text_where_labels_are_and_white_elsewhere():
    grid = image_grid(cells(4), rows=2)
    res = draw_grid_annotations(grid, W, H, [[GridAnnotation("Steps: 10")], ["Steps: 20"]],
                                [[GridAnnotation("CFG: 5")], [GridAnnotation("CFG: 7")]])
    pad_left = W * 3 // 4
    pad_top = res.height - grid.height
    assert res.width == grid.width + pad_left
    assert pad_top > 12  # one 12 px line + two line spacings
    a = arr(res)

    assert is_white(a[:pad_top, :pad_left])  # the corner above the row labels
    top_band, left_band = a[:pad_top, pad_left:], a[pad_top:, :pad_left]
    for col in range(2):
        span = top_band[:, col * W:(col + 1) * W]
        ink = dark(span)
        assert ink.sum() > 20, f"no text above column {col}"
        xs = np.nonzero(ink.any(axis=0))[0]
        assert 0 < xs.min() and xs.max() < W - 1  # centred in its column, away from the edges
        assert abs((xs.min() + xs.max()) / 2 - W / 2) < 6
    # only text and white in the bands: every non-white pixel is grey-ish ink, no cell colour leaked in
    for band in (top_band, left_band):
        assert (band.max(axis=-1) - band.min(axis=-1) < 8).all()
    for row in range(2):
        span = left_band[row * H:(row + 1) * H]
        ys = np.nonzero(dark(span).any(axis=1))[0]
        assert len(ys) > 0, f"no text left of row {row}"
        assert ys.min() > 0 and ys.max() < H - 1
    # cells are pasted unchanged below/right of the bands
    for i in range(4):
        assert tuple(a[pad_top + (i // 2) * H + H // 2, pad_left + (i % 2) * W + W // 2]) == COLORS[i]


def test_empty_labels_leave_no_band():
    grid = image_grid(cells(2), rows=1)
    only_top = draw_grid_annotations(grid, W, H, [["a"], ["b"]], [[GridAnnotation()]])
    assert only_top.width == grid.width and only_top.height > grid.height
    only_left = draw_grid_annotations(grid, W, H, [[GridAnnotation()], [GridAnnotation("")]], [["row"]])
    assert only_left.height == grid.height and only_left.width == grid.width + W * 3 // 4
    none = draw_grid_annotations(grid, W, H, [[""], [""]], [[""]])
    assert none.size == grid.size
    assert np.array_equal(arr(none), arr(grid))


def test_long_labels_are_wrapped_inside_their_column():
    grid = image_grid(cells(3), rows=1)
    long = "a rather long label that cannot possibly fit on one line of this narrow cell"
    one_line = draw_grid_annotations(grid, W, H, [["short"], ["short"], ["short"]], [[""]])
    wrapped = draw_grid_annotations(grid, W, H, [["short"], [long], ["short"]], [[""]])
    pad_top = wrapped.height - grid.height
    assert pad_top > 2 * (one_line.height - grid.height)  # several lines make the band taller
    band = arr(wrapped)[:pad_top]
    ink = dark(band)
    xs = np.nonzero(ink[:, W:2 * W].any(axis=0))[0]
    assert xs.min() >= 0 and xs.max() < W  # the long label's ink stays in the middle column...
    assert not ink[:, W - 1].any() and not ink[:, 2 * W].any()  # ...never touching the neighbours' edges
    ys = np.nonzero(ink.any(axis=1))[0]
    assert ys.min() > 0 and ys.max() < pad_top - 1  # and inside the band vertically
    # outside the ink's bounding boxes the band is pure background
    assert is_white(band[:, :, :][:, W + xs.max() + 2:2 * W])


def test_single_long_word_is_shrunk_to_fit():
    grid = image_grid(cells(2), rows=1)
    word = "Supercalifragilisticexpialidocious-checkpoint-v2"
    res = draw_grid_annotations(grid, W, H, [[word], ["x"]], [[""]])
    pad_top = res.height - grid.height
    ink = dark(arr(res)[:pad_top])
    assert not ink[:, W - 1:W + 50].any()  # nothing spills over the column edge (column 1 holds a centred "x")
    first_col = np.nonzero(ink[:, :W].any(axis=0))[0]
    assert first_col.min() >= 0 and first_col.max() <= W - 1 and first_col.max() - first_col.min() > W // 2


def test_margin_adds_background_between_cells():
    grid = image_grid(cells(4), rows=2)
    res = draw_grid_annotations(grid, W, H, [["a"], ["b"]], [["c"], ["d"]], margin=10)
    pad_left = W * 3 // 4
    pad_top = res.height - grid.height - 10
    assert res.size == (grid.width + pad_left + 10, grid.height + pad_top + 10)
    a = arr(res)
    assert is_white(a[pad_top:, pad_left + W:pad_left + W + 10])  # vertical gap
    assert is_white(a[pad_top + H:pad_top + H + 10, pad_left:])  # horizontal gap
    assert tuple(a[pad_top + H + 10 + H // 2, pad_left + W + 10 + W // 2]) == COLORS[3]


def test_label_count_must_match_grid():
    grid = image_grid(cells(4), rows=2)
    with pytest.raises(ValueError, match="horizontal"):
        draw_grid_annotations(grid, W, H, [["a"]], [["c"], ["d"]])
    with pytest.raises(ValueError, match="vertical"):
        draw_grid_annotations(grid, W, H, [["a"], ["b"]], [["c"]])


def test_inputs_are_not_modified():
    hor = [[GridAnnotation("one two three four five six seven")], [GridAnnotation("b")]]
    draw_grid_annotations(image_grid(cells(2), rows=1), W, H, hor, [[GridAnnotation()]])
    assert [len(g) for g in hor] == [1, 1] and hor[0][0].size is None


# ------------------------------------------------------------------ prompt matrix


def test_prompt_matrix_inactive_parts_grey_and_struck():
    parts = "a cat|red hat|blue sky|green grass".split("|")  # 3 variable parts: 8 images, 2 rows x 4 cols
    grid = image_grid(cells(8, 120, 120), rows=1 << ((len(parts) - 1) // 2))
    assert grid.size == (4 * 120, 2 * 120)
    res = draw_prompt_matrix(grid, 120, 120, parts)
    pad_left = 120 * 3 // 4
    pad_top = res.height - grid.height
    a = arr(res)
    top = a[:pad_top, pad_left:]
    col0, col3 = top[:, :120], top[:, 360:480]
    # column 0 = combination 0: both column parts off -> only grey ink, and a 4 px strike line
    assert not dark(col0).any()
    grey = (np.abs(col0 - 153) <= 2).all(axis=-1)
    assert grey.sum() > 100
    assert grey.all(axis=1).sum() == 0 and (grey.sum(axis=1) > 20).sum() >= 4  # strike rows across the text
    # column 3 = both on -> black text
    assert dark(col3).sum() > 50
    # rows: row 0 has "green grass" off, row 1 on
    left = a[pad_top:, :pad_left]
    assert not dark(left[:120]).any() and dark(left[120:]).any()


def test_prompt_matrix_margin():
    parts = ["x", "a", "b"]
    grid = image_grid(cells(4, 60, 60), rows=2)
    plain = draw_prompt_matrix(grid, 60, 60, parts)
    spaced = draw_prompt_matrix(grid, 60, 60, parts, margin=6)
    assert spaced.size == (plain.width + 6, plain.height + 6)


# ------------------------------------------------------------------ X/Y/Z plot


def test_format_helpers():
    assert format_value(0.30000000000000004) == "0.3"
    assert format_value(7.0) == "7.0" and format_value(20) == "20"
    assert format_value_add_label("CFG Scale", 7.5) == "CFG Scale: 7.5"
    assert format_value_add_label("Steps", 20) == "Steps: 20"
    assert format_value_join_list(("cat", "hat")) == "cat, hat"
    assert format_remove_path("models/Stable-diffusion/sub/tiny.safetensors") == "tiny.safetensors"
    assert format_nothing(3) == ""


def test_xyz_grid_result_list_and_sizes():
    w, h = 64, 48
    xs, ys, zs = ["Steps: 10", "Steps: 20", "Steps: 30"], ["CFG: 5", "CFG: 7"], ["Seed: 1", "Seed: 2"]
    imgs = cells(12, w, h)
    out = draw_xyz_grid(imgs, xs, ys, zs, draw_legend=False)
    assert len(out) == 1 and out[0].size == (2 * 3 * w, 2 * h)
    a = arr(out[0])
    # cell (ix=1, iy=1, iz=1) is index 1 + 1*3 + 1*6 = 10, drawn in the second sub-grid
    assert tuple(a[h + h // 2, 3 * w + w + w // 2]) == COLORS[10 % 6]

    out = draw_xyz_grid(imgs, xs, ys, zs, draw_legend=True, include_sub_grids=True, include_lone_images=True)
    assert len(out) == 1 + 2 + 12
    z_grid, subs, lone = out[0], out[1:3], out[3:]
    assert lone == imgs
    expected_sub = draw_grid_annotations(image_grid(imgs[:6], rows=2), w, h, [[x] for x in xs], [[y] for y in ys])
    assert subs[0].size == subs[1].size == expected_sub.size
    assert np.array_equal(arr(subs[0]), arr(expected_sub))
    # the Z grid: sub-grids side by side, Z labels in a band above, no left band
    assert z_grid.width == 2 * subs[0].width and z_grid.height > subs[0].height
    z_pad = z_grid.height - subs[0].height
    za = arr(z_grid)
    assert dark(za[:z_pad, :subs[0].width]).any() and dark(za[:z_pad, subs[0].width:]).any()
    assert np.array_equal(za[z_pad:, :subs[0].width], arr(subs[0]))


def test_xyz_grid_nothing_axes_and_margin():
    w, h = 64, 64
    out = draw_xyz_grid(cells(3, w, h), ["a", "b", "c"], [""], [""], draw_legend=True, margin_size=4)
    g = out[0]
    # one Z value with an empty label: no Z band; empty Y label: no left band; margins between columns
    assert g.width == 3 * w + 2 * 4
    assert g.height > h and dark(arr(g)[: g.height - h]).any()


def test_xyz_grid_failed_cells_and_errors():
    imgs: list = cells(4, 32, 32)
    imgs[2] = None
    out = draw_xyz_grid(imgs, ["1", "2"], ["a", "b"], [""], draw_legend=False, include_lone_images=True)
    assert tuple(arr(out[0])[48, 16]) == (0, 0, 0)  # the failed cell is black
    assert out[3].size == (32, 32)
    with pytest.raises(ValueError, match="expected 4"):
        draw_xyz_grid(cells(3, 8, 8), ["1", "2"], ["a", "b"], [""])
    with pytest.raises(ValueError, match="no cell"):
        draw_xyz_grid([None, None], ["1", "2"], [""], [""])


# ------------------------------------------------------------------ fonts


def test_get_font_is_offline_and_sized():
    f12, f30 = get_font(12), get_font(30)
    assert f12.getlength("Steps: 20") < f30.getlength("Steps: 20")
    assert get_font(12) is f12  # cached
    fallback = get_font(12, "/nonexistent/font.ttf")
    assert fallback.getlength("abc") > 0
    assert get_font(0).getlength("a") > 0  # clamped to 1 px, never an error
    import os
    if os.path.isfile("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        assert isinstance(f12, ImageFont.FreeTypeFont) and "DejaVu" in f12.getname()[0]


def test_without_system_fonts_pillows_default_font_is_used(monkeypatch):
    import webui.imaging.grid_annotations as ga

    monkeypatch.setattr(ga, "FONT_CANDIDATES", ())
    monkeypatch.setattr(ga, "FONT_NAMES", ())
    monkeypatch.setattr(ga, "_PACKAGED_FONT_DIR", ga.Path("/nonexistent"))
    ga._load_font.cache_clear()
    try:
        font = get_font(14)
        assert font.getlength("Steps: 20") > 0
        grid = image_grid(cells(2), rows=1)
        res = draw_grid_annotations(grid, W, H, [["Steps: 10"], ["Steps: 20"]], [[""]])
        assert dark(arr(res)[: res.height - grid.height]).sum() > 10
    finally:
        ga._load_font.cache_clear()
