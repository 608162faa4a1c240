"""X/Y/Z plot, Prompt matrix and Prompts from file on tiny real-layout checkpoints: grid sizes,
labels, cells equal to single generations, checkpoint axis, infotexts."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from test_processing import BASE, env, pipeline_with, run  # noqa: F401 - the module fixture
from webui.processing.errors import GenerationError
from webui.scripts.xyz_plot import axes_for

XYZ_DEFAULTS = ["Seed", "", None, "Nothing", "", None, "Nothing", "", None, True, False, False, False, False, False,
                False, 0, False]


def xyz_args(**changes: Any) -> list[Any]:
    names = ["x_type", "x_values", "x_dropdown", "y_type", "y_values", "y_dropdown", "z_type", "z_values",
             "z_dropdown", "draw_legend", "include_lone_images", "include_sub_grids", "no_fixed_seeds", "vary_x",
             "vary_y", "vary_z", "margin_size", "csv_mode"]
    args = list(XYZ_DEFAULTS)
    for k, v in changes.items():
        args[names.index(k)] = v
    return args


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def test_xyz_steps_by_cfg_cells_equal_single_generations(env) -> None:
    pl = pipeline_with(env)
    res = run(pl, script_name="X/Y/Z plot",
              script_args=xyz_args(x_type="Steps", x_values="2-3", y_type="CFG Scale", y_values="3, 7",
                                   include_lone_images=True))
    assert len(res.images) == 4 and len(res.grids) == 1
    grid = arr(res.grids[0])
    # two columns of 64 px cells with a label band above and to the left
    band_h, band_w = grid.shape[0] - 2 * 64, grid.shape[1] - 2 * 64
    assert band_h > 0 and band_w > 0
    top = grid[:band_h, band_w:]
    left = grid[band_h:, :band_w]
    assert (top < 100).any() and (left < 100).any()  # label text is drawn (dark pixels on white)
    assert (grid[:band_h, :band_w] == 255).all()     # the corner stays white
    cells = {}
    for iy, cfg in enumerate((3.0, 7.0)):
        for ix, steps in enumerate((2, 3)):
            single = run(pl, steps=steps, cfg_scale=cfg)
            cell = grid[band_h + iy * 64: band_h + (iy + 1) * 64, band_w + ix * 64: band_w + (ix + 1) * 64]
            assert np.array_equal(cell, arr(single.images[0])), (steps, cfg)
            cells[(ix, iy)] = single
    # each cell keeps its own infotext
    texts = res.infotexts
    assert "Steps: 2" in texts[0] and "CFG scale: 3," in texts[0]
    assert "Steps: 3" in texts[3] and "CFG scale: 7," in texts[3]
    assert all("Seed: 7" in t for t in texts)


def test_xyz_axis_by_index_and_z_grids(env) -> None:
    pl = pipeline_with(env)
    labels = [a.label for a in axes_for(False)]
    res = run(pl, script_name="x/y/z plot",
              script_args=xyz_args(x_type=labels.index("Seed"), x_values="1,2", z_type="Sampler",
                                   z_dropdown=["Euler", "DDIM"], include_sub_grids=True))
    assert len(res.grids) == 3  # the Z grid, then one sub-grid per sampler
    z, s1, s2 = res.grids
    assert z.width >= s1.width + s2.width and s1.size == s2.size
    assert res.images == []


def test_xyz_checkpoint_axis_loads_each_model_and_restores(env) -> None:
    models, _, _ = env
    models.load("a.safetensors")
    loads: list[str] = []
    orig = models.load

    def counting(name: str, *a: Any, **k: Any) -> Any:
        loads.append(str(name))
        return orig(name, *a, **k)
    models.load = counting  # type: ignore[method-assign]
    try:
        pl = pipeline_with(env)
        res = run(pl, script_name="X/Y/Z plot",
                  script_args=xyz_args(x_type="Seed", x_values="1, 2, 3", y_type="Checkpoint name",
                                       y_dropdown=["b.safetensors", "a.safetensors"], include_lone_images=True))
    finally:
        models.load = orig  # type: ignore[method-assign]
    assert len(res.images) == 6
    assert sum("Model: b" in t for t in res.infotexts) == 3 and sum("Model: a" in t for t in res.infotexts) == 3
    assert len([n for n in loads if n.startswith("b")]) == 1  # b loaded once for its three cells
    assert models.current.info.stem == "a"  # the model the user had is back


def test_xyz_bad_values_are_refused(env) -> None:
    pl = pipeline_with(env)
    with pytest.raises(GenerationError, match="Steps"):
        run(pl, script_name="X/Y/Z plot", script_args=xyz_args(x_type="Steps", x_values="two, three"))
    with pytest.raises(GenerationError, match="unknown axis type"):
        run(pl, script_name="X/Y/Z plot", script_args=xyz_args(x_type="Flux capacitor", x_values="1"))
    with pytest.raises(GenerationError, match="sampler"):
        run(pl, script_name="X/Y/Z plot", script_args=xyz_args(x_type="Sampler", x_values="Nope", csv_mode=True))
    with pytest.raises(GenerationError, match="Prompt S/R"):
        run(pl, script_name="X/Y/Z plot", script_args=xyz_args(x_type="Prompt S/R", x_values="dog, cat"))


def test_prompt_matrix_images_infotexts_and_grid(env) -> None:
    pl = pipeline_with(env)
    res = run(pl, prompt="a circle|red|on blue", script_name="Prompt matrix",
              script_args=[False, False, "positive", "comma", 0])
    assert [t.split("\n")[0] for t in res.infotexts] == ["a circle", "a circle, red", "a circle, on blue",
                                                        "a circle, red, on blue"]
    assert all("Seed: 7" in t for t in res.infotexts)
    grid = res.grids[0]
    assert grid.width > 2 * 64 and grid.height > 2 * 64  # 2x2 cells plus the labels
    single = run(pl, prompt="a circle, red")
    assert np.array_equal(arr(res.images[1]), arr(single.images[0]))
    diff = run(pl, prompt="a|b", script_name="Prompt matrix", script_args=[True, True, "positive", "space", 0])
    assert [t.split("\n")[0] for t in diff.infotexts] == ["a", "b a"]
    assert "Seed: 7" in diff.infotexts[0] and "Seed: 8" in diff.infotexts[1]


def test_prompts_from_file_lines_and_options(env) -> None:
    pl = pipeline_with(env)
    text = "a red circle\n\n--prompt \"a blue square\" --steps 2 --seed 5 --cfg_scale 3 --sampler_name \"DDIM\"\n"
    res = run(pl, prompt="", script_name="Prompts from file or textbox", script_args=[False, False, "start", text])
    assert len(res.images) == 2
    assert res.infotexts[0].startswith("a red circle\n") and "Seed: 7" in res.infotexts[0]
    second = res.infotexts[1]
    assert second.startswith("a blue square\n")
    for part in ("Steps: 2", "Seed: 5", "CFG scale: 3,", "Sampler: DDIM"):
        assert part in second
    single = run(pl, prompt="a blue square", steps=2, seed=5, cfg_scale=3, sampler_name="DDIM")
    assert np.array_equal(arr(res.images[1]), arr(single.images[0]))
    it = run(pl, prompt="base", script_name="Prompts from file or textbox",
             script_args=[True, False, "end", "one\ntwo"])
    assert it.infotexts[0].startswith("base one\n") and "Seed: 7" in it.infotexts[0]
    assert it.infotexts[1].startswith("base two\n") and "Seed: 8" in it.infotexts[1]
    with pytest.raises(GenerationError, match="line 1"):
        run(pl, script_name="Prompts from file or textbox", script_args=[False, False, "start", "--steps ten"])


def test_scripts_keep_to_the_pixel_limit(env) -> None:
    _, settings, _ = env
    pl = pipeline_with(env)
    settings.set("generation_max_pixels", 3 * 64 * 64)
    try:
        with pytest.raises(GenerationError, match="generation_max_pixels"):
            run(pl, script_name="X/Y/Z plot", script_args=xyz_args(x_type="Steps", x_values="1-4"))
        with pytest.raises(GenerationError, match="generation_max_pixels"):
            run(pl, prompt="a|b|c", script_name="Prompt matrix", script_args=[False, False, "positive", "comma", 0])
        with pytest.raises(GenerationError, match="generation_max_pixels"):
            run(pl, script_name="Prompts from file or textbox",
                script_args=[False, False, "start", "one\ntwo\n--prompt three --batch_size 2"])
        assert len(run(pl, script_name="X/Y/Z plot", script_args=xyz_args(x_type="Steps", x_values="1-3"),
                       steps=1).grids) == 1
    finally:
        settings.set("generation_max_pixels", None)


def test_xyz_interrupt_stops_after_the_current_cell_with_a_partial_grid(env) -> None:
    from webui.services.jobs import JobState
    from webui.services.requests import Txt2ImgRequest
    pl = pipeline_with(env)
    state = JobState("t", "t")
    calls = {"n": 0}

    def interrupt_in_second_cell(params) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # 3 steps per cell: the first step of the second cell
            state.interrupt()
    pl.callbacks.add("cfg_denoiser", interrupt_in_second_cell, name="interrupter")
    req = Txt2ImgRequest(**{**BASE, "script_name": "X/Y/Z plot",
                            "script_args": xyz_args(x_type="Seed", x_values="1, 2, 3, 4", include_lone_images=True)})
    res = pl.run(req, state, save=False)
    assert len(res.images) == 2  # the first cell, and the second one stopped where it was
    grid = arr(res.grids[0])
    band = grid.shape[0] - 64
    last_cells = grid[band:, -2 * 64:]
    assert (last_cells == 0).all()  # cells never made are black
    assert not (grid[band:, grid.shape[1] - 4 * 64: grid.shape[1] - 3 * 64] == 0).all()
