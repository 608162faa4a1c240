"""Face restoration (GFPGAN, CodeFormer): real-layout model files written here (random weights,
the architectures spandrel and spandrel_extra_arches detect), the offline Haar face detector against
OpenCV 4's own results, crop/restore/paste, the registry's listing, the Extras service and the API
through a real server."""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
import requests
import torch
from PIL import Image

from conftest import Server, start_server, stop_server

CF_WEIGHT = 0.3

# ---------------------------------------------------------------- pictures


def drawn_face(size: int = 256, bg: tuple[int, int, int] = (160, 120, 90)) -> np.ndarray:
    """A cartoon face (skin, hair, eyes, brows, nose, mouth), RGB uint8, that Haar's frontal-face cascade finds."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = bg
    s = size / 256

    def P(x: float, y: float) -> tuple[int, int]:
        return int(x * s), int(y * s)

    cv2.ellipse(img, P(128, 135), (int(62 * s), int(80 * s)), 0, 0, 360, (225, 190, 170), -1)
    cv2.ellipse(img, P(128, 85), (int(66 * s), int(40 * s)), 0, 180, 360, (60, 40, 30), -1)
    for ex in (103, 153):
        cv2.ellipse(img, P(ex, 118), (int(13 * s), int(7 * s)), 0, 0, 360, (240, 240, 240), -1)
        cv2.circle(img, P(ex, 118), int(6 * s), (20, 30, 40), -1)
        cv2.line(img, P(ex - 16, 100), P(ex + 14, 100), (70, 50, 40), max(1, int(5 * s)))
    cv2.line(img, P(128, 122), P(122, 155), (180, 140, 120), max(1, int(3 * s)))
    cv2.line(img, P(122, 155), P(134, 155), (180, 140, 120), max(1, int(3 * s)))
    cv2.ellipse(img, P(128, 178), (int(22 * s), int(8 * s)), 0, 0, 180, (150, 60, 60), max(1, int(4 * s)))
    return cv2.GaussianBlur(img, (0, 0), 1.5 * s)


def portrait() -> Image.Image:
    """352x256: a gradient background with a 160 px drawn face; its restore square lies inside."""
    h, w = 256, 352
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([60 + x * 0.4, 90 + y * 0.3, 140 + 0 * x], -1).astype(np.uint8)
    arr[48:208, 96:256] = drawn_face(160, bg=(100, 110, 140))
    return Image.fromarray(arr, "RGB")


def px(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(np.int16)


def square_mask(shape: tuple[int, int], box: Any) -> np.ndarray:
    from webui.imaging.face_restore import face_crop_box
    left, top, side = face_crop_box(box)
    m = np.zeros(shape, bool)
    m[max(0, top):top + side, max(0, left):left + side] = True
    return m


# ---------------------------------------------------------------- model files in real layouts


def gfpgan_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """GFPGANv1.4's layout ("clean" architecture, 512 px, channel multiplier 2): spandrel builds this
    architecture at a fixed size, so the file is full size (87 M weights, stored as fp16)."""
    from webui.imaging.upscalers import spandrel_module
    spandrel_module()
    from spandrel.architectures.GFPGAN import GFPGAN
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                       fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    return {k: v.half() for k, v in model.state_dict().items()}


def codeformer_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """CodeFormer's layout made as small as spandrel_extra_arches' detection allows: the transformer
    (1 layer, 16 wide, 32 codes) and one fuse block at 32 px are free, the VQ autoencoder is fixed (68 M)."""
    from webui.imaging.face_restore import face_arch_registry
    face_arch_registry()
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CodeFormer(dim_embd=16, n_head=8, n_layers=1, codebook_size=32, latent_size=256, connect_list=["32"])
    return {k: v.half() for k, v in model.state_dict().items()}


def compact_state_dict() -> dict[str, torch.Tensor]:
    """A Real-ESRGAN Compact upscaler: a real model, but not a face restorer."""
    g = torch.Generator().manual_seed(0)
    return {"body.0.weight": torch.randn(4, 3, 3, 3, generator=g), "body.0.bias": torch.zeros(4),
            "body.1.weight": torch.full((4,), 0.2), "body.2.weight": torch.randn(12, 4, 3, 3, generator=g),
            "body.2.bias": torch.zeros(12)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("faces")
    models = d / "models"
    for sub in ("Codeformer", "Stable-diffusion"):
        (models / sub).mkdir(parents=True)
    gfp = d / "gfpgan-elsewhere"  # given with --gfpgan-models-path to the server
    gfp.mkdir()
    torch.save({"params_ema": gfpgan_state_dict()}, gfp / "GFPGANv1.4.pth")  # A1111's download, its wrapper
    (gfp / "broken.pth").write_bytes(b"PK\x03\x04 this is not a zip at all" * 8)
    (gfp / "empty.pth").write_bytes(b"")
    save_file(codeformer_state_dict(), str(models / "Codeformer" / "codeformer-tiny.safetensors"))
    save_file(compact_state_dict(), str(models / "Codeformer" / "an-upscaler.safetensors"))
    return d


def folders(data_dir: Path) -> dict[str, Path]:
    return {"GFPGAN": data_dir / "gfpgan-elsewhere", "CodeFormer": data_dir / "models" / "Codeformer"}


@pytest.fixture(scope="module")
def faces(data_dir: Path) -> Any:
    from webui.imaging.face_restore import FaceRestorers
    return FaceRestorers(folders(data_dir))


# ---------------------------------------------------------------- detection


def test_haar_cascade_equals_opencv4() -> None:
    """The numpy cascade gives exactly the raw windows (minNeighbors=0) and the grouped face that
    OpenCV 4.14's CascadeClassifier.detectMultiScale(gray, 1.1, n) gave for this drawing."""
    from webui.imaging.face_detect import HaarCascade, detect_faces
    opencv_raw = [(18, 24, 147, 147), (24, 24, 147, 147), (28, 33, 133, 133), (30, 40, 121, 121),
                  (30, 45, 121, 121), (32, 51, 110, 110), (33, 33, 133, 133), (35, 35, 121, 121),
                  (35, 40, 121, 121), (35, 45, 121, 121), (37, 51, 110, 110), (40, 40, 121, 121),
                  (40, 45, 121, 121), (46, 51, 110, 110), (46, 55, 110, 110)]
    img = drawn_face(192)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    assert sorted(HaarCascade().detect_raw(gray, 1.1)) == opencv_raw
    assert detect_faces(img) == [(34, 41, 123, 123)]          # OpenCV, minNeighbors=3: [[34, 41, 123, 123]]
    assert detect_faces(Image.fromarray(drawn_face(96))) == [(17, 20, 62, 62)]


def test_detection_finds_the_face_and_nothing_in_plain_pictures() -> None:
    from webui.imaging.face_restore import detect_faces
    (x, y, w, h), = detect_faces(portrait())
    assert 96 <= x and x + w <= 256 and 48 <= y and y + h <= 208  # inside the drawn 160 px face
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur((rng.random((240, 320)) * 255).astype(np.uint8), (0, 0), 2)
    assert detect_faces(Image.new("RGB", (300, 200), (120, 130, 140))) == []
    assert detect_faces(Image.fromarray(noise)) == []
    big = Image.fromarray(drawn_face(512)).resize((1536, 1536))  # searched at 1024, boxes scaled back
    (bx, by, bw, bh), = detect_faces(big)
    assert bw > 600 and 200 < bx + bw / 2 - 768 + 300 < 400


def test_crop_restore_paste_changes_only_the_face_square() -> None:
    """The crop/paste path with an injected box and a stand-in model (inverts the crop): inside the
    square the face changes, outside it not a single pixel, and the edge is feathered."""
    from webui.imaging.face_restore import face_crop_box, feather_mask, paste_restored_faces
    img = np.asarray(portrait())
    seen: list[tuple[int, ...]] = []

    def invert(face: np.ndarray) -> np.ndarray:
        seen.append(face.shape)
        return 255 - face

    boxes = [(121, 78, 108, 108), (-20, 200, 60, 60)]  # the second reaches past the picture's corner
    out = paste_restored_faces(img, boxes, invert).astype(np.int16)
    assert seen == [(512, 512, 3)] * 2
    inside = square_mask(img.shape[:2], boxes[0]) | square_mask(img.shape[:2], boxes[1])
    diff = np.abs(out - img).sum(-1)
    assert diff[~inside].max() == 0
    left, top, side = face_crop_box(boxes[0])
    assert (left, top, side) == (80, 38, 189)
    cy, cx = top + side // 2, left + side // 2
    assert diff[cy, cx] > 300                    # the centre is the model's output
    m = feather_mask(side)
    assert m[side // 2, side // 2] == pytest.approx(1.0) and m[0].max() == 0 and m[:, -1].max() == 0
    assert 0 < m[side // 2, 6] < 1               # a soft edge, not a hard one


def test_no_model_file_returns_the_picture_unchanged_with_a_warning(tmp_path: Path) -> None:
    from webui.imaging.face_restore import FaceRestorers, restore_faces
    reg = FaceRestorers({"GFPGAN": tmp_path / "GFPGAN", "CodeFormer": tmp_path / "Codeformer"})
    img = portrait()
    for name in ("GFPGAN", "CodeFormer"):
        out, warning = restore_faces(img, name, 0.5, registry=reg)
        assert out is img and warning is not None
        assert str(tmp_path / ("GFPGAN" if name == "GFPGAN" else "Codeformer")) in warning and name in warning
    out, warning = reg.restore(img, "nope")
    assert out is img and "unknown face restorer 'nope'" in warning
    assert reg.listing() == [
        {"name": "CodeFormer", "cmd_dir": str(tmp_path / "Codeformer"), "model_path": None,
         "error": reg.missing_reason("CodeFormer")},
        {"name": "GFPGAN", "cmd_dir": str(tmp_path / "GFPGAN"), "model_path": None,
         "error": reg.missing_reason("GFPGAN")}]


# ---------------------------------------------------------------- the registry and the models


def test_listing_loaded_and_unusable_files_with_reasons(faces: Any, data_dir: Path) -> None:
    entries = {e.path.name: e for e in faces.files()}
    assert set(entries) == {"GFPGANv1.4.pth", "broken.pth", "empty.pth", "codeformer-tiny.safetensors",
                            "an-upscaler.safetensors"}
    assert (entries["GFPGANv1.4.pth"].architecture, entries["GFPGANv1.4.pth"].error) == ("GFPGAN", None)
    assert entries["codeformer-tiny.safetensors"].architecture == "CodeFormer"
    assert entries["codeformer-tiny.safetensors"].error is None
    assert "corrupt" in entries["broken.pth"].error or "zip" in entries["broken.pth"].error
    assert "empty" in entries["empty.pth"].error
    assert "not a CodeFormer face restorer" in entries["an-upscaler.safetensors"].error
    assert faces.model_file("GFPGAN").path.name == "GFPGANv1.4.pth"
    assert faces.model_file("CodeFormer").path.name == "codeformer-tiny.safetensors"
    assert {e.path.name for e in faces.unusable()} == {"broken.pth", "empty.pth", "an-upscaler.safetensors"}
    listing = faces.listing()
    assert [i["name"] for i in listing] == ["CodeFormer", "GFPGAN"]  # A1111's order
    assert listing[1]["cmd_dir"] == str(data_dir / "gfpgan-elsewhere") and "error" not in listing[1]


@pytest.fixture(scope="module")
def restored(faces: Any) -> dict[str, Any]:
    """Each restorer once on the portrait, faces detected; CodeFormer's forward kwargs recorded."""
    img = portrait()
    seen: list[dict[str, Any]] = []
    desc = faces.model(faces.model_file("CodeFormer"))
    hook = desc.model.register_forward_pre_hook(lambda m, a, kw: seen.append(dict(kw)), with_kwargs=True)
    try:
        cf = faces.restore_faces(img, "codeformer", CF_WEIGHT)  # A1111 clients' lower-case names work too
    finally:
        hook.remove()
    gfp = faces.restore(img, "GFPGAN")
    return {"img": img, "CodeFormer": cf, "GFPGAN": gfp, "cf_kwargs": seen}


@pytest.mark.parametrize("name", ["GFPGAN", "CodeFormer"])
def test_restorer_changes_only_the_detected_face_square(restored: dict[str, Any], name: str) -> None:
    from webui.imaging.face_restore import detect_faces
    img = restored["img"]
    out, warning = restored[name]
    assert warning is None and out.size == img.size and out.mode == "RGB"
    box, = detect_faces(img)
    inside = square_mask((img.height, img.width), box)
    diff = np.abs(px(out) - px(img)).sum(-1)
    assert diff[~inside].max() == 0
    assert (diff[inside] > 0).mean() > 0.5


def test_codeformer_gets_the_weight_and_gfpgan_runs_reproducibly(restored: dict[str, Any], faces: Any) -> None:
    assert [kw.get("weight") for kw in restored["cf_kwargs"]] == [CF_WEIGHT]
    assert not np.array_equal(px(restored["GFPGAN"][0]), px(restored["CodeFormer"][0]))
    from webui.imaging.face_restore import _call_kwargs
    gfpgan = faces.model(faces.model_file("GFPGAN")).model
    # the noise stored in the file (same input, same output), no intermediate pictures, no weight
    assert _call_kwargs(gfpgan, 0.7) == {"randomize_noise": False, "return_rgb": False}


def test_alpha_is_kept(faces: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A picture with transparency keeps its alpha channel (a stand-in model that inverts the crop)."""
    from webui.imaging import face_restore
    monkeypatch.setattr(face_restore, "run_face_model", lambda desc, face, weight=None: 255 - face)
    img = portrait().convert("RGBA")
    img.putalpha(Image.linear_gradient("L").resize(img.size))
    box = (121, 78, 108, 108)
    out, warning = faces.restore_faces(img, "GFPGAN", None, faces=[box])
    assert warning is None and out.mode == "RGBA"
    assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(img.getchannel("A")))
    diff = np.abs(px(out) - px(img)).sum(-1)
    inside = square_mask((img.height, img.width), box)
    assert diff[~inside].max() == 0 and diff[inside].max() > 0


# ---------------------------------------------------------------- the Extras service


@pytest.fixture(scope="module")
def service(data_dir: Path, faces: Any) -> Iterator[Any]:
    from webui.imaging.upscalers import UpscalerRegistry
    from webui.services.extras import ExtrasService
    from webui.services.jobs import JobQueue
    from webui.settings import Settings

    queue = JobQueue()
    yield ExtrasService(UpscalerRegistry({}), Settings.load(data_dir / "svc-config.json"), data_dir / "svc-out",
                        queue, faces=faces)
    queue.close()


def test_service_order_blend_and_a1111_infotext(service: Any, restored: dict[str, Any],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Upscale, then GFPGAN, then CodeFormer (A1111's script order), each blended at its visibility
    (the restorers stand in: each call returns a recorded restoration)."""
    from webui.services.extras import ExtrasParams
    img = restored["img"]
    calls: list[tuple[str, Any, tuple[int, int]]] = []

    def fake(pic: Image.Image, name: str, weight: Any, **kw: Any) -> tuple[Image.Image, None]:
        calls.append((name, weight, pic.size))
        return restored[name][0].resize(pic.size), None

    monkeypatch.setattr(service.faces, "restore_faces", fake)
    res = service.submit([(img, None)], ExtrasParams(upscaler_1="Lanczos", upscaling_resize=1, gfpgan_visibility=1,
                                                     codeformer_visibility=0.25, codeformer_weight=CF_WEIGHT),
                         save=False).result()
    assert calls == [("GFPGAN", None, img.size), ("CodeFormer", CF_WEIGHT, img.size)]
    expected = Image.blend(restored["GFPGAN"][0], restored["CodeFormer"][0], 0.25)
    assert np.abs(px(res.images[0]) - px(expected)).max() <= 1
    assert res.infotexts == ["Postprocess upscale by: 1, Postprocess upscaler: Lanczos, GFPGAN visibility: 1, "
                             f"CodeFormer visibility: 0.25, CodeFormer weight: {CF_WEIGHT}"]
    assert res.warnings == []


def test_service_refuses_a_restorer_without_a_file(tmp_path: Path) -> None:
    from webui.imaging.face_restore import FaceRestorers
    from webui.imaging.upscalers import UpscalerRegistry
    from webui.services.extras import ExtrasError, ExtrasParams, ExtrasService
    from webui.services.jobs import JobQueue
    from webui.settings import Settings

    queue = JobQueue()
    try:
        svc = ExtrasService(UpscalerRegistry({}), Settings.load(tmp_path / "c.json"), tmp_path / "out", queue,
                            faces=FaceRestorers({"GFPGAN": tmp_path / "g", "CodeFormer": tmp_path / "c"}))
        with pytest.raises(ExtrasError, match="face restoration: GFPGAN: no model file in .*g; put GFPGANv1.4.pth"):
            svc.validate(ExtrasParams(gfpgan_visibility=0.5))
        with pytest.raises(ExtrasError, match="codeformer_weight must be 0..1"):
            svc.validate(ExtrasParams(codeformer_weight=1.5))
        svc.validate(ExtrasParams(gfpgan_visibility=0, codeformer_visibility=0))  # off: no file needed
    finally:
        queue.close()


def test_flags_choose_the_folders(tmp_path: Path) -> None:
    from webui.cli import parse_args, resolve_paths
    m = ["--models-dir", str(tmp_path / "m")]
    paths = resolve_paths(parse_args(m + ["--gfpgan-models-path", str(tmp_path / "g")]))
    assert paths.face_restorer_folders() == {"CodeFormer": tmp_path / "m" / "Codeformer", "GFPGAN": tmp_path / "g"}
    paths = resolve_paths(parse_args(m + ["--codeformer-models-path", str(tmp_path / "c")]))
    assert paths.face_restorer_folders() == {"CodeFormer": tmp_path / "c", "GFPGAN": tmp_path / "m" / "GFPGAN"}


# ---------------------------------------------------------------- API against the real server


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[Server]:
    s = start_server(data_dir, data_dir / "models" / "Stable-diffusion", "--skip-load-model-at-start",
                     "--gfpgan-models-path", str(data_dir / "gfpgan-elsewhere"))
    yield s
    stop_server(s)


def b64png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_api_face_restorers(server: Server, data_dir: Path) -> None:
    items = requests.get(server.api("face-restorers"), timeout=120).json()
    assert [(i["name"], i["cmd_dir"]) for i in items] == [
        ("CodeFormer", str(data_dir / "models" / "Codeformer")), ("GFPGAN", str(data_dir / "gfpgan-elsewhere"))]
    assert [Path(i["model_path"]).name for i in items] == ["codeformer-tiny.safetensors", "GFPGANv1.4.pth"]


@pytest.mark.slow  # 10-30 s in a browser or with servers of its own: the default run stays under 15 min
def test_api_codeformer_and_gfpgan_visibility(server: Server, restored: dict[str, Any]) -> None:
    """extra-single-image with CodeFormer at 0.5 and extra-batch-images with GFPGAN at 1: the
    server's pictures equal the in-process restorations (blended), with A1111's infotext."""
    img = restored["img"]
    r = requests.post(server.api("extra-single-image"), timeout=300, json={
        "image": b64png(img), "codeformer_visibility": 0.5, "codeformer_weight": CF_WEIGHT})
    assert r.status_code == 200, r.text
    out = decode(r.json()["image"])
    expected = Image.blend(img, restored["CodeFormer"][0], 0.5)
    assert np.abs(px(out) - px(expected)).max() <= 2
    assert r.json()["html_info"] == f"<p>CodeFormer visibility: 0.5, CodeFormer weight: {CF_WEIGHT}</p>"
    assert out.info["postprocessing"] == f"CodeFormer visibility: 0.5, CodeFormer weight: {CF_WEIGHT}"

    r = requests.post(server.api("extra-batch-images"), timeout=300, json={
        "imageList": [{"data": b64png(img), "name": "face.png"}], "gfpgan_visibility": 1, "upscaler_1": "None"})
    assert r.status_code == 200, r.text
    out, = (decode(i) for i in r.json()["images"])
    assert np.abs(px(out) - px(restored["GFPGAN"][0])).max() <= 2
    assert "GFPGAN visibility: 1" in r.json()["html_info"]
