"""Bad input never answers 5xx: a corpus generated from the API's request models, against one real server.

Every route that takes a body (and /progress's query) gets, field by field, wrong types, out-of-range and
non-finite numbers (also as the JSON literals NaN/Infinity), huge and odd strings, path-like and unknown
names, broken images, and malformed bodies. The corpus is built from the pydantic models' fields, so a
field added to a request model is fuzzed without touching this file. Each answer must be < 500, a 4xx must
carry a JSON `detail`, and afterwards the server still generates.

The server runs with a small `generation_max_pixels`, so every request that is accepted stays cheap (a
64x64 baseline at 1 step); anything big must be refused before it runs.
"""
from __future__ import annotations

import base64
import io
import json
import math
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, get_args, get_origin

import pytest
import requests
from PIL import Image
from pydantic import BaseModel

from conftest import Server, start_server, stop_server, wait_for_model

# ---- the request models whose fields drive the corpus ----
from webui.api.extras_routes import ExtrasBatchImagesRequest, ExtrasSingleImageRequest
from webui.api.routes import ControlNetDetectRequest, PngInfoRequest
from webui.processing.requests import Img2ImgRequest, Txt2ImgRequest

MAX_PIXELS = 4 * 128 * 128  # the server's generation_max_pixels during the fuzz


def png_b64(size: tuple[int, int] = (64, 64), color: tuple[int, int, int] = (200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_declared_png(w: int = 100_000, h: int = 100_000) -> str:
    """A tiny file whose header claims a huge image (a decompression bomb must be refused unread)."""
    raw = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))
    return base64.b64encode(raw).decode()


VALID_PNG = png_b64()
_PNG_BYTES = base64.b64decode(VALID_PNG)
BAD_IMAGES: list[Any] = [
    "", " ", "not base64 !!", "data:image/png;base64,", "data:image/png;base64,!!!!",
    base64.b64encode(b"hello, not an image").decode(),
    base64.b64encode(_PNG_BYTES[: len(_PNG_BYTES) // 2]).decode(),          # truncated PNG
    base64.b64encode(_PNG_BYTES[:8]).decode(),                              # signature only
    huge_declared_png(), huge_declared_png(1, 10**9), huge_declared_png(0, 0),
    "data:image/png;base64," + huge_declared_png(),
    VALID_PNG[:-7],                                                        # base64 cut mid-quantum
    png_b64((1, 1)), "A" * 100_000,
]

PATH_NAMES = ["../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini", "C:\\Windows\\win.ini",
              "models/../../../x.safetensors", "\x00", "con", "nul:"]
ODD_STRINGS = ["", " ", "no such thing", "ünïcödé ✓ 🎨 \u202e\u200b", "\ud800".encode("utf-8", "surrogatepass")
               .decode("utf-8", "replace"), "%s%n{0}", "<script>alert(1)</script>", "x" * 100_000] + PATH_NAMES

# values a field of any type gets (wrong types, extremes, odd strings)
GENERIC: list[Any] = [None, True, False, "garbage", "", [], {}, [1, 2], {"a": 1}, [[[]]],
                      -1, 0, 1, -(2**31), 2**31, 2**63, 2**64 + 1, -(2**64) - 1, 10**30, -10**30,
                      1.5, -1.5, 1e308, -1e308, 5e-324, "1e308", "-1", "NaN", "Infinity", "-Infinity",
                      "x" * 100_000, "ünïcödé ✓ 🎨"]
# non-finite JSON literals (Python's json accepts them; so does the server's parser)
NONFINITE_LITERALS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]
# names checked against a list (samplers, upscalers, checkpoints, scripts, ...)
NAME_FIELDS = {"sampler_name", "sampler_index", "scheduler", "hr_sampler_name", "hr_scheduler", "hr_upscaler",
               "refiner_checkpoint", "hr_checkpoint_name", "script_name", "upscaler_1", "upscaler_2",
               "controlnet_module", "force_task_id", "name"}
IMAGE_FIELDS = {"init_images", "mask", "latent_mask", "image", "imageList", "controlnet_input_images",
                "controlnet_masks", "data"}
HIRES_FIELDS_PREFIX = ("hr_", "firstphase_", "denoising_strength")
# Longest string sent per field (the infotext parser is linear since its key pattern is bounded).
MAX_STRING: dict[str, int] = {}

TXT2IMG_BASE: dict[str, Any] = {"prompt": "a red circle", "steps": 1, "width": 64, "height": 64,
                                "sampler_name": "Euler", "seed": 1}
IMG2IMG_BASE: dict[str, Any] = dict(TXT2IMG_BASE, init_images=[VALID_PNG], denoising_strength=0.5)
HIRES_BASE: dict[str, Any] = dict(TXT2IMG_BASE, enable_hr=True, hr_scale=1.5, hr_second_pass_steps=1,
                                  denoising_strength=0.5)
EXTRAS_BASE: dict[str, Any] = {"upscaling_resize": 1.5, "upscaler_1": "Lanczos"}
DETECT_BASE: dict[str, Any] = {"controlnet_module": "canny", "controlnet_input_images": [VALID_PNG],
                               "controlnet_processor_res": 64}


@dataclass
class Case:
    method: str
    path: str                   # under the server's root, e.g. "/sdapi/v1/txt2img"
    body: Any = None            # JSON-encodable body, or None
    raw: bytes | None = None    # a raw body (sent as application/json unless content_type says otherwise)
    content_type: str = "application/json"
    note: str = ""

    def label(self) -> str:
        shown = self.note or (repr(self.raw[:80]) if self.raw is not None else repr(self.body)[:120])
        return f"{self.method} {self.path} {shown}"


def _annotation_kinds(ann: Any) -> set[type]:
    """The plain types a field annotation allows (int, float, str, list, dict, bool, ...)."""
    origin = get_origin(ann)
    if origin is None:
        return {ann} if isinstance(ann, type) else set()
    if origin in (list, dict, tuple, set):
        return {origin}
    out: set[type] = set()
    for a in get_args(ann):
        out |= _annotation_kinds(a)
    return out


def field_values(name: str, ann: Any) -> list[Any]:
    """The bad (and borderline) values tried for one field: generic ones plus some by type and name."""
    kinds = _annotation_kinds(ann)
    vals: list[Any] = list(GENERIC)
    if kinds & {int, float}:
        vals += [-2, 2**32, 2**32 - 1, 2**64 - 1, 2**64, -(2**63), 0.0, -0.0, 1e-300, 99999, 4096, 8192, 65536]
    if str in kinds or name in NAME_FIELDS:
        vals += ODD_STRINGS
    if list in kinds:
        vals += [[None], ["garbage"], [1e308], [{"a": [1]}], ["x" * 100_000], [None] * 50]
    if dict in kinds:
        vals += [{"": None}, {"x" * 1000: 1}, {"a": {"b": {"c": [1e308]}}}, {"sd_model_checkpoint": None}]
    if name in IMAGE_FIELDS:
        vals += BAD_IMAGES + [[b] for b in BAD_IMAGES] + [[VALID_PNG, b] for b in BAD_IMAGES[:4]]
        vals += [[{"data": b, "name": n} for b, n in ((VALID_PNG, "../../etc/passwd"), (BAD_IMAGES[2], "x"))]]
    if name == "override_settings":
        vals += [{"sd_model_checkpoint": n} for n in PATH_NAMES + ["no such model", 1, [], {}]]
        vals += [{"sd_vae": n} for n in PATH_NAMES[:3] + [1]]
        vals += [{k: v} for k in ("CLIP_stop_at_last_layers", "eta_noise_seed_delta", "eta_ancestral",
                                   "comma_padding_backtrack", "generation_max_pixels", "emphasis", "samples_format",
                                   "unknown_option_xyz")
                 for v in ("abc", None, [], {}, -1, 10**30, 1e308, -1e308, "NaN", 2**64)]
    if name == "alwayson_scripts":
        vals += [{"controlnet": v} for v in ("x", 1, [], None, {"args": "x"}, {"args": [None]}, {"args": [1, "x"]},
                                             {"args": [{"enabled": True}]},
                                             {"args": [{"enabled": True, "image": BAD_IMAGES[2]}]},
                                             {"args": [{"enabled": True, "image": VALID_PNG, "module": m,
                                                        "model": n}
                                                       for m, n in zip(["canny", "../../x", "nope"],
                                                                       PATH_NAMES[:3])]})]
        vals += [{"controlnet": {"args": [{"enabled": True, "image": VALID_PNG, "module": "canny", "model": "None",
                                           k: v}]}}
                 for k in ("weight", "guidance_start", "guidance_end", "processor_res", "threshold_a",
                           "resize_mode", "control_mode", "pixel_perfect")
                 for v in ("abc", -1, 10**9, 1e308, None, [], "NaN")]
        vals += [{"no such script": {"args": [1]}}, {"../../etc/passwd": {"args": [1]}}, {"": {"args": []}}]
    if name == "script_args":
        vals += [["garbage"] * 20, [None] * 20, [1e308] * 20, [{"a": 1}] * 20]
    cap = MAX_STRING.get(name)
    if cap is not None:
        vals = [v[:cap] if isinstance(v, str) else v for v in vals]
    unique: dict[str, Any] = {}
    for v in vals:  # the generic and typed lists overlap; True == 1 but both are kept
        unique.setdefault(f"{type(v).__name__}:{v!r}", v)
    return list(unique.values())


def _raw_with(base: dict[str, Any], name: str, literal: str) -> bytes:
    marker = "__FUZZ_LITERAL__"
    return json.dumps(dict(base, **{name: marker})).replace(f'"{marker}"', literal).encode()


def model_cases(path: str, model: type[BaseModel], base: dict[str, Any],
                base_for: Any = None) -> Iterator[Case]:
    """Field by field: every bad value in the JSON body, and the non-finite literals in a raw body."""
    for name, info in model.model_fields.items():
        b = base_for(name) if base_for else base
        for v in field_values(name, info.annotation):
            yield Case("POST", path, dict(b, **{name: v}), note=f"{name}={_short(v)}")
        for lit in NONFINITE_LITERALS:
            yield Case("POST", path, raw=_raw_with(b, name, lit), note=f"{name}={lit} (raw JSON literal)")
        # the same inside a list (lists of numbers / images)
        yield Case("POST", path, raw=_raw_with(b, name, "[NaN, Infinity]"), note=f"{name}=[NaN, Infinity]")
    yield Case("POST", path, dict(base, unknown_field_xyz=1, **{"": None, "x" * 1000: [1e308]}),
               note="extra unknown fields")


def body_cases(path: str) -> Iterator[Case]:
    """Malformed bodies any route taking JSON gets."""
    deep = "[" * 5000 + "]" * 5000
    deep_obj = '{"a":' * 3000 + "1" + "}" * 3000
    for raw, ct, note in [(b"", "application/json", "empty body"),
                          (b"not json at all", "application/json", "non-JSON body"),
                          (b"{\"prompt\": ", "application/json", "truncated JSON"),
                          (b"\xff\xfe\x00garbage", "application/json", "invalid UTF-8"),
                          (b"null", "application/json", "JSON null"), (b"[]", "application/json", "JSON list"),
                          (b"123", "application/json", "JSON number"), (b"\"x\"", "application/json", "JSON string"),
                          (b"NaN", "application/json", "JSON NaN"),
                          (deep.encode(), "application/json", "deeply nested list"),
                          (deep_obj.encode(), "application/json", "deeply nested object"),
                          (b"{}", "text/plain", "text/plain content type"),
                          (b"a=1&b=2", "application/x-www-form-urlencoded", "form body"),
                          (b"--x\r\n\r\n", "multipart/form-data; boundary=x", "broken multipart")]:
        yield Case("POST", path, raw=raw, content_type=ct, note=note)
    yield Case("POST", path, {}, note="empty object")


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else f"{r[:40]}...<{len(r)} chars>"


def script_cases(path: str, base: dict[str, Any], scripts: list[dict[str, Any]]) -> Iterator[Case]:
    """Each selectable script of the tab (GET /script-info): its arguments of the wrong type, one at a
    time and all at once, and too many or too few of them."""
    for info in scripts:
        if info.get("is_alwayson"):
            continue
        name = info["name"]
        defaults = [a.get("value") for a in info.get("args") or []]
        for v in ("garbage", None, -1, 10**6, 1e308, "1e308", [], {"a": 1}, "x" * 10_000):
            yield Case("POST", path, dict(base, script_name=name, script_args=[v] * len(defaults)),
                       note=f"script {name}: all args={_short(v)}")
            for i in range(len(defaults)):
                args = list(defaults)
                args[i] = v
                yield Case("POST", path, dict(base, script_name=name, script_args=args),
                           note=f"script {name}: arg {i}={_short(v)}")
        for args in ([], defaults[:1], defaults + ["extra"] * 5):
            yield Case("POST", path, dict(base, script_name=name, script_args=args),
                       note=f"script {name}: {len(args)} args")


def build_corpus(option_keys: list[str], scripts: list[dict[str, Any]] | None = None) -> list[Case]:
    api = "/sdapi/v1"
    cases: list[Case] = []

    def txt2img_base(name: str) -> dict[str, Any]:
        return HIRES_BASE if name.startswith(HIRES_FIELDS_PREFIX) or name == "enable_hr" else TXT2IMG_BASE

    # the generation routes: every field of their request models
    cases += model_cases(f"{api}/txt2img", Txt2ImgRequest, TXT2IMG_BASE, txt2img_base)
    cases += model_cases(f"{api}/img2img", Img2ImgRequest, IMG2IMG_BASE)
    # the same hires fields once more without enable_hr (they must be ignored or refused, never crash)
    cases += [c for c in model_cases(f"{api}/txt2img", Txt2ImgRequest, TXT2IMG_BASE)
              if c.note.startswith(("hr_", "denoising_strength"))]
    # the issue's own cases
    cases += [Case("POST", f"{api}/txt2img", dict(HIRES_BASE, denoising_strength=0), note="hires at denoising 0"),
              Case("POST", f"{api}/txt2img", dict(TXT2IMG_BASE, width=4096, height=4096, batch_size=64, n_iter=1000),
                   note="huge request"),
              Case("POST", f"{api}/txt2img", dict(HIRES_BASE, hr_resize_x=10**9, hr_resize_y=10**9),
                   note="huge hires box")]
    for path, base, img2img in ((f"{api}/txt2img", TXT2IMG_BASE, False), (f"{api}/img2img", IMG2IMG_BASE, True)):
        cases += script_cases(path, base, [s for s in scripts or [] if bool(s.get("is_img2img")) == img2img])
    # Prompt matrix with 2**20 combinations: refused by the job's own checks, not run
    cases.append(Case("POST", f"{api}/txt2img", dict(TXT2IMG_BASE, prompt="|".join("abcdefghijklmnopqrstu"),
                                                      script_name="prompt matrix"), note="prompt matrix 2**20"))
    cases += model_cases(f"{api}/extra-single-image", ExtrasSingleImageRequest, dict(EXTRAS_BASE, image=VALID_PNG))
    cases += model_cases(f"{api}/extra-batch-images", ExtrasBatchImagesRequest,
                         dict(EXTRAS_BASE, imageList=[{"data": VALID_PNG, "name": "a.png"}]))
    cases += model_cases(f"{api}/png-info", PngInfoRequest, {"image": VALID_PNG})
    cases += model_cases("/controlnet/detect", ControlNetDetectRequest, DETECT_BASE)
    # options: every known key gets values of the wrong type, extremes and non-finite literals
    for key in option_keys:
        if key in ("sd_model_checkpoint", "generation_max_pixels"):
            vals: list[Any] = ["abc", [], {}, 1e308, "NaN", -1] + PATH_NAMES[:2]
        else:
            vals = ["abc", [], {}, {"a": 1}, [1], 10**30, -10**30, 1e308, -1e308, 2**64, "NaN", "x" * 10_000]
        for v in vals:
            cases.append(Case("POST", f"{api}/options", {key: v}, note=f"option {key}={_short(v)}"))
        for lit in ("NaN", "Infinity", "-Infinity"):
            cases.append(Case("POST", f"{api}/options", raw=f'{{"{key}": {lit}}}'.encode(),
                              note=f"option {key}={lit} (raw JSON literal)"))
    cases.append(Case("POST", f"{api}/options", {"no_such_option": 1, "../../etc/passwd": "x"}, note="unknown keys"))
    # routes with a JSON body (or none) get malformed bodies
    for path in (f"{api}/txt2img", f"{api}/img2img", f"{api}/extra-single-image", f"{api}/extra-batch-images",
                 f"{api}/png-info", f"{api}/options", "/controlnet/detect"):
        cases += body_cases(path)
    # routes without a body: a body, or garbage, must not matter
    for path in (f"{api}/interrupt", f"{api}/skip", f"{api}/refresh-checkpoints", f"{api}/refresh-loras",
                 f"{api}/refresh-vae", f"{api}/refresh-embeddings"):
        cases += [Case("POST", path, note="no body"), Case("POST", path, {"x": 1}, note="a body"),
                  Case("POST", path, raw=b"not json", note="non-JSON body")]
    for v in ("true", "false", "1", "0", "garbage", "", "NaN", "x" * 5000, "%00", "../../etc/passwd"):
        cases.append(Case("GET", f"{api}/progress?skip_current_image={v}", note=f"skip_current_image={v[:20]}"))
    return cases


def send(server: Server, case: Case, timeout: float = 60) -> requests.Response:
    url = server.url + case.path
    if case.raw is not None:
        return requests.request(case.method, url, data=case.raw, headers={"Content-Type": case.content_type},
                                timeout=timeout)
    if case.body is None:
        return requests.request(case.method, url, timeout=timeout)
    return requests.request(case.method, url, data=json.dumps(case.body, allow_nan=True),
                            headers={"Content-Type": case.content_type}, timeout=timeout)


def problems_with(resp: requests.Response) -> str | None:
    """None when the answer is acceptable: < 500, and every 4xx a JSON body with a `detail` message."""
    if resp.status_code >= 500:
        return f"{resp.status_code}: {resp.text[:300]}"
    if 400 <= resp.status_code < 500:
        try:
            body = resp.json()
        except ValueError:
            return f"{resp.status_code} without a JSON body: {resp.text[:200]!r}"
        if not isinstance(body, dict) or not body.get("detail"):
            return f"{resp.status_code} without a detail message: {resp.text[:200]}"
    return None


@pytest.fixture(scope="module")
def fuzz_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    # one torch thread: the tiny model gains nothing from more, and on a busy 2-core machine spinning
    # intra-op threads made each 64x64 step 100x slower
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        server = start_server(data_dir, model_dir, "--ckpt", str(model_dir / "tiny-sd1.safetensors"))
    try:
        wait_for_model(server)
        r = requests.post(server.api("options"), json={"generation_max_pixels": MAX_PIXELS, "samples_save": False,
                                                       "grid_save": False}, timeout=30)
        assert r.status_code == 200, r.text
        yield server
    finally:
        stop_server(server)


def test_corpus_is_generated_from_the_models() -> None:
    corpus = build_corpus(["CLIP_stop_at_last_layers"])
    notes = {c.note.split("=")[0] for c in corpus}
    # every field of every request model is fuzzed
    for model in (Txt2ImgRequest, Img2ImgRequest, ExtrasSingleImageRequest, ExtrasBatchImagesRequest,
                  PngInfoRequest, ControlNetDetectRequest):
        assert set(model.model_fields) <= notes, set(model.model_fields) - notes
    assert len(corpus) > 3000


@pytest.mark.slow  # ~2 min: run with `-m slow`
def test_bad_input_never_answers_5xx(fuzz_server: Server) -> None:
    options = requests.get(fuzz_server.api("options"), timeout=30).json()
    scripts = requests.get(fuzz_server.api("script-info"), timeout=30).json()
    corpus = build_corpus(sorted(options), scripts)
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    t0 = time.perf_counter()
    try:
        for case in corpus:
            try:
                resp = send(fuzz_server, case)
            except requests.RequestException as e:  # a hang or a dropped connection is a failure too
                failures.append(f"{case.label()}: {type(e).__name__}: {e}")
                if fuzz_server.proc.poll() is not None:
                    break
                continue
            statuses[resp.status_code] += 1
            why = problems_with(resp)
            if why:
                failures.append(f"{case.label()}: {why}")
    finally:
        # whatever the option cases changed goes back (None values are skipped by the route)
        restore = {k: v for k, v in options.items() if k != "sd_checkpoint_hash"}
        requests.post(fuzz_server.api("options"), json=restore, timeout=60)
    elapsed = time.perf_counter() - t0
    print(f"\n{len(corpus)} requests in {elapsed:.1f}s; statuses {dict(sorted(statuses.items()))}")
    assert not failures, f"{len(failures)} of {len(corpus)} bad answers:\n" + "\n".join(failures[:60])
    # the server is still healthy: a valid generation answers 200
    r = requests.post(fuzz_server.api("txt2img"), json=TXT2IMG_BASE, timeout=120)
    assert r.status_code == 200, r.text
    assert len(r.json()["images"]) == 1


def test_fuzz_findings_answer_4xx_with_the_field_named(fuzz_server: Server) -> None:
    """The issue's cases, one by one: each refusal names what to change."""
    def post(body: dict[str, Any]) -> requests.Response:
        return requests.post(fuzz_server.api("txt2img"), data=json.dumps(body, allow_nan=True),
                             headers={"Content-Type": "application/json"}, timeout=120)

    for body, status, needle in [
        (dict(HIRES_BASE, hr_scale=-1), 422, "hr_scale"),
        (dict(HIRES_BASE, hr_scale=0), 422, "hr_scale"),
        (dict(HIRES_BASE, hr_resize_x=-64), 422, "hr_resize_x"),
        (dict(HIRES_BASE, hr_resize_y=10**9), 422, "hr_resize_y"),
        (dict(TXT2IMG_BASE, seed=2**64), 422, "seed"),
        (dict(TXT2IMG_BASE, seed=-2), 422, "seed"),
        (dict(TXT2IMG_BASE, subseed=2**70), 422, "subseed"),
        (dict(TXT2IMG_BASE, seed=1.5), 422, "seed"),
        (dict(TXT2IMG_BASE, seed="abc"), 422, "seed"),
        (dict(TXT2IMG_BASE, cfg_scale=math.nan), 422, "cfg_scale"),
        (dict(TXT2IMG_BASE, cfg_scale=math.inf), 422, "cfg_scale"),
        (dict(TXT2IMG_BASE, batch_size=64, n_iter=100), 422, "generation_max_pixels"),
        # a request cannot raise the limit for itself, also when its size is the model's (known at run time)
        (dict(TXT2IMG_BASE, batch_size=64, n_iter=100, override_settings={"generation_max_pixels": 10**12}),
         422, "generation_max_pixels"),
        ({k: v for k, v in TXT2IMG_BASE.items() if k not in ("width", "height")} | {
            "batch_size": 64, "n_iter": 100, "override_settings": {"generation_max_pixels": 10**12}},
         422, "generation_max_pixels"),
        (dict(TXT2IMG_BASE, override_settings={"eta_noise_seed_delta": math.inf}), 422, "eta_noise_seed_delta"),
    ]:
        r = post(body)
        assert r.status_code == status and needle in r.text, (body, r.status_code, r.text[:300])
    r = post(dict(TXT2IMG_BASE, batch_size=64, n_iter=100))
    assert "6400 images of 64x64 = 26214400 pixels" in r.text and str(MAX_PIXELS) in r.text, r.text
    # the accepted seed range: -1 (random) and 0..2**64-1, as long as seed + i stays in it
    for seed in (0, 2**32 - 1, 2**64 - 1):
        r = post(dict(TXT2IMG_BASE, seed=seed))
        assert r.status_code == 200, r.text
        assert json.loads(r.json()["info"])["seed"] == seed
    r = post(dict(TXT2IMG_BASE, seed=2**64 - 1, batch_size=2))
    assert r.status_code == 422 and "seed" in r.json()["detail"], r.text
    # options: non-finite numbers are refused with the option named, and nothing changes
    r = requests.post(fuzz_server.api("options"), data=b'{"eta_noise_seed_delta": Infinity}',
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400 and "eta_noise_seed_delta" in r.json()["detail"], r.text
    assert requests.get(fuzz_server.api("options"), timeout=30).json()["eta_noise_seed_delta"] == 0


def test_hires_at_denoising_0_returns_the_upscaled_first_pass(fuzz_server: Server) -> None:
    """A1111's API tests post enable_hr with denoising_strength 0 and expect 200. As in A1111 (a
    zero-step schedule) the hires pass then changes nothing: the picture is the first pass upscaled.
    The sampler is skipped, so its prompt, sampler and steps do not matter."""
    images = []
    for extra in ({}, {"hr_prompt": "a blue square", "hr_sampler_name": "DPM++ 2M", "hr_second_pass_steps": 5}):
        for upscaler in ("Latent", "Lanczos"):
            body = dict(HIRES_BASE, denoising_strength=0, hr_scale=2, hr_upscaler=upscaler, **extra)
            r = requests.post(fuzz_server.api("txt2img"), json=body, timeout=120)
            assert r.status_code == 200, r.text
            img = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
            assert img.size == (128, 128)
            assert "Denoising strength: 0" in img.info["parameters"]
            images.append(img.convert("RGB").tobytes())
    assert images[0] == images[2] and images[1] == images[3]
