"""Scripts over the A1111 HTTP API against the real server: listings, X/Y/Z by label and by index,
unknown scripts refused, and the options snapshot seen from outside (a POST /options during a job)."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import requests

from conftest import Server
from test_api import BASE, b64_image, post


def test_scripts_and_script_info_list_both_tabs(api_server: Server) -> None:
    scripts = requests.get(api_server.api("scripts"), timeout=10).json()
    for name in ("prompt matrix", "prompts from file or textbox", "x/y/z plot"):
        assert name in scripts["txt2img"] and name in scripts["img2img"]
    for name in ("sd upscale", "poor man's outpainting", "outpainting mk2"):
        assert name in scripts["img2img"] and name not in scripts["txt2img"]
    info = requests.get(api_server.api("script-info"), timeout=10).json()
    xyz = next(s for s in info if s["name"] == "x/y/z plot" and not s["is_img2img"])
    assert [a["label"] for a in xyz["args"]][:3] == ["X type", "X values", "X values"]
    assert "Steps" in xyz["args"][0]["choices"] and len(xyz["args"]) == 18
    cn = next(s for s in info if s["name"] == "controlnet" and s["is_img2img"])
    assert cn["is_alwayson"]


def test_xyz_over_the_api_grid_first(api_server: Server) -> None:
    args = ["Steps", "1, 2", None, "CFG Scale", "3, 9", None, "Nothing", "", None, True, True, False, False,
            False, False, False, 0, False]
    r = post(api_server, "txt2img", {**BASE, "script_name": "x/y/z plot", "script_args": args})
    assert r.status_code == 200, r.text
    body = r.json()
    images = [b64_image(s) for s in body["images"]]
    assert len(images) == 5  # the grid, then the four cells (include sub images)
    grid = images[0]
    assert grid.width > 2 * 64 and grid.height > 2 * 64
    info = json.loads(body["info"])
    assert info["index_of_first_image"] == 1
    assert "Steps: 1" in info["infotexts"][0] and "CFG scale: 3" in info["infotexts"][0]
    single = post(api_server, "txt2img", {**BASE, "steps": 2, "cfg_scale": 9}).json()
    assert np.array_equal(np.asarray(images[4].convert("RGB")), np.asarray(b64_image(single["images"][0]).convert("RGB")))
    # the axis type by A1111's index gives the same plot
    labels = next(s for s in requests.get(api_server.api("script-info"), timeout=10).json()
                  if s["name"] == "x/y/z plot" and not s["is_img2img"])["args"][0]["choices"]
    args2 = list(args)
    args2[0], args2[3] = labels.index("Steps"), labels.index("CFG Scale")
    r2 = post(api_server, "txt2img", {**BASE, "script_name": "X/Y/Z plot", "script_args": args2})
    assert r2.status_code == 200
    assert np.array_equal(np.asarray(b64_image(r2.json()["images"][0]).convert("RGB")), np.asarray(grid.convert("RGB")))


def test_unknown_scripts_and_bad_script_args_are_4xx(api_server: Server) -> None:
    r = post(api_server, "txt2img", {**BASE, "script_name": "no such script"})
    assert r.status_code == 422 and "no such script" in r.json()["detail"]
    r = post(api_server, "txt2img", {**BASE, "alwayson_scripts": {"mystery": {"args": [1]}}})
    assert r.status_code == 422 and "mystery" in r.json()["detail"]
    r = post(api_server, "txt2img", {**BASE, "script_name": "x/y/z plot", "script_args": ["Steps", "a-b"]})
    assert r.status_code == 400 and "Steps" in r.json()["detail"]
    r = post(api_server, "txt2img", {**BASE, "script_name": "x/y/z plot", "script_args": [99, "1"]})
    assert r.status_code == 400 and "axis type" in r.json()["detail"]
    assert post(api_server, "txt2img", {**BASE, "steps": 1}).status_code == 200  # still serving


def test_options_posted_during_a_job_are_kept(api_server: Server) -> None:
    before = requests.get(api_server.api("options"), timeout=10).json()["eta_noise_seed_delta"]
    result: dict = {}

    def job() -> None:
        result["r"] = post(api_server, "txt2img", {**BASE, "steps": 40, "override_settings": {
            "eta_noise_seed_delta": 777}, "override_settings_restore_afterwards": True})
    t = threading.Thread(target=job)
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        st = requests.get(api_server.api("progress"), timeout=10).json()["state"]
        if st["sampling_step"] > 0:
            break
        time.sleep(0.05)
    assert requests.post(api_server.api("options"), json={"eta_noise_seed_delta": 123}, timeout=10).status_code == 200
    t.join(120)
    assert result["r"].status_code == 200
    info = json.loads(result["r"].json()["info"])
    assert "ENSD: 777" in info["infotexts"][0]  # the job ran with its override
    assert requests.get(api_server.api("options"), timeout=10).json()["eta_noise_seed_delta"] == 123
    saved = json.loads((api_server.data_dir / "config.json").read_text())
    assert saved["eta_noise_seed_delta"] == 123
    requests.post(api_server.api("options"), json={"eta_noise_seed_delta": before}, timeout=10)
