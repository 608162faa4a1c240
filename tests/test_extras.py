"""Extras tab and model upscalers: real model files (Real-ESRGAN Compact and ESRGAN layouts written
here), spandrel as the reference, the service, the API against a real server, and the tab in a
real browser."""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import requests
import torch
from PIL import Image, PngImagePlugin

from conftest import Server, start_server, stop_server

# ---------------------------------------------------------------- model files in real layouts


def compact_state_dict(nf: int = 4, scale: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Real-ESRGAN SRVGGNetCompact (realesr-general-x4v3 layout): body.0 conv, body.1 PReLU,
    body.2 conv, body.3 PReLU, body.4 conv to 3*scale² channels for the pixel shuffle."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, s: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * s

    return {"body.0.weight": r(nf, 3, 3, 3), "body.0.bias": r(nf, s=0.1), "body.1.weight": torch.full((nf,), 0.2),
            "body.2.weight": r(nf, nf, 3, 3), "body.2.bias": r(nf, s=0.1), "body.3.weight": torch.full((nf,), 0.2),
            "body.4.weight": r(3 * scale * scale, nf, 3, 3), "body.4.bias": r(3 * scale * scale, s=0.1)}


def esrgan_new_arch_state_dict(nf: int = 8, gc: int = 32, seed: int = 1) -> dict[str, torch.Tensor]:
    """xinntao/ESRGAN "new arch" RRDBNet x4 (RRDB_ESRGAN_x4.pth layout), one RRDB block, 8 features (spandrel, like the original, fixes the growth channels at 32)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, cout: int, cin: int, scale: float = 0.12, bias: float = 0.0) -> None:
        sd[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * scale
        sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.01 + bias

    conv("conv_first", nf, 3)
    for rdb in (1, 2, 3):
        for i in range(1, 6):
            conv(f"RRDB_trunk.0.RDB{rdb}.conv{i}", nf if i == 5 else gc, nf + (i - 1) * gc)
    for name in ("trunk_conv", "upconv1", "upconv2", "HRconv"):
        conv(name, nf, nf)
    conv("conv_last", 3, nf, scale=0.3, bias=0.5)  # output spread over 0..255, not a flat picture
    return sd


class Evil:
    def __reduce__(self) -> tuple:
        return (print, ("this pickle ran code",))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("extras")
    models = d / "models"
    for kind in ("ESRGAN", "RealESRGAN", "Stable-diffusion"):
        (models / kind).mkdir(parents=True)
    torch.save({"params": compact_state_dict()}, models / "RealESRGAN" / "tiny-compact-x2.pth")
    torch.save({"params_ema": compact_state_dict(seed=5)}, models / "RealESRGAN" / "realesr-general-x4v3.pth")
    save_file(compact_state_dict(), str(models / "ESRGAN" / "tiny-compact-st.safetensors"))
    torch.save(esrgan_new_arch_state_dict(), models / "ESRGAN" / "tiny-rrdb-x4.pth")
    (models / "ESRGAN" / "broken.pth").write_bytes(b"PK\x03\x04 this is not a zip at all" * 8)
    save_file({"text_model.weight": torch.zeros(4, 4)}, str(models / "ESRGAN" / "foreign.safetensors"))
    torch.save({"x": Evil()}, models / "ESRGAN" / "evil.pth")  # a pickle that would call print()
    (models / "ESRGAN" / "empty.pth").write_bytes(b"")
    (d / "elsewhere").mkdir()  # a folder given with --dat-models-path
    save_file(compact_state_dict(scale=3, seed=2), str(d / "elsewhere" / "tiny-dat-flag.safetensors"))
    return d


def folders(data_dir: Path) -> dict[str, Path]:
    return {k: data_dir / "models" / k for k in ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT")}


@pytest.fixture(scope="module")
def registry(data_dir: Path) -> Any:
    from webui.imaging.upscalers import UpscalerRegistry
    return UpscalerRegistry(folders(data_dir))


def photo(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth picture with some texture (random noise is a poor test of resamplers)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, 0.5 + 0.5 * np.sin(x / 3 + y / 5)], -1) * 200
    arr = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def spandrel_direct(path: Path, img: Image.Image) -> np.ndarray:
    """What spandrel computes for a file read with torch.load(weights_only=True) / safetensors."""
    from safetensors.torch import load_file

    from webui.imaging.upscalers import spandrel_module
    spandrel = spandrel_module()
    raw = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu",
                                                                                 weights_only=True)
    desc = spandrel.ModelLoader().load_from_state_dict(spandrel.canonicalize_state_dict(raw)).eval()
    x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.inference_mode():
        y = desc(x)[0]
    return (y.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def px(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(np.int16)


# ---------------------------------------------------------------- the registry


def test_listing_names_scales_and_unusable_files_with_reasons(registry: Any) -> None:
    entries = {e.name: e for e in registry.list()}
    assert list(entries)[:3] == ["None", "Lanczos", "Nearest"]
    models = [n for n in entries if entries[n].is_model]
    assert models == sorted(models, key=str.lower)  # A1111: built-ins first, then by name
    assert (entries["tiny-compact-x2"].scale, entries["tiny-compact-x2"].architecture) == (2, "RealESRGAN Compact")
    assert (entries["tiny-compact-st"].scale, entries["tiny-rrdb-x4"].scale) == (2, 4)
    assert entries["tiny-rrdb-x4"].architecture == "ESRGAN"
    assert entries["R-ESRGAN General 4xV3"].path.name == "realesr-general-x4v3.pth"  # A1111's name
    reasons = {n: entries[n].error for n in ("broken", "foreign", "evil", "empty")}
    assert "corrupt" in reasons["broken"], reasons
    assert "not an upscaler architecture spandrel knows" in reasons["foreign"], reasons
    assert "refused: this pickle would run code" in reasons["evil"], reasons
    assert "empty" in reasons["empty"], reasons
    assert set(registry.names()) >= {"None", "Lanczos", "tiny-compact-x2"} and "broken" not in registry.names()
    from webui.imaging.upscalers import UpscalerError
    with pytest.raises(UpscalerError, match="unusable: .*corrupt"):
        registry.find("broken")
    with pytest.raises(UpscalerError, match="unknown upscaler 'nope'"):
        registry.find("nope")
    import importlib.util
    import sys
    if importlib.util.find_spec("torchvision") is None:  # spandrel imported without it: no stand-in left behind
        assert not any(k == "torchvision" or k.startswith("torchvision.") for k in sys.modules)


@pytest.mark.parametrize("name,file", [("tiny-compact-x2", "RealESRGAN/tiny-compact-x2.pth"),
                                       ("tiny-compact-st", "ESRGAN/tiny-compact-st.safetensors"),
                                       ("tiny-rrdb-x4", "ESRGAN/tiny-rrdb-x4.pth")])
def test_model_output_equals_spandrel(registry: Any, data_dir: Path, name: str, file: str) -> None:
    img = photo(23, 17)
    scale = registry.find(name).scale
    out = registry.upscale(img, scale, name, tile=0)
    assert out.size == (23 * scale, 17 * scale)
    ref = spandrel_direct(data_dir / "models" / file, img)
    assert ref.std() > 30 and np.abs(np.diff(ref.astype(int), axis=1)).mean() > 5  # a real picture, not flat
    assert np.array_equal(np.asarray(out), ref)
    # default tiling (192 px) on a small picture is one tile: the same pixels
    assert np.array_equal(np.asarray(registry.upscale(img, scale, name)), np.asarray(out))


def test_tiled_equals_untiled(registry: Any) -> None:
    img = photo(100, 75, seed=3)
    whole = registry.upscale(img, 2, "tiny-compact-x2", tile=0)
    seen: list[tuple[int, int]] = []
    tiled = registry.upscale(img, 2, "tiny-compact-x2", tile=32, overlap=8, on_tile=lambda d, n: seen.append((d, n)))
    assert seen[-1] == (12, 12)  # 4 x 3 tiles of 32 px, 8 px overlap, over 100 x 75
    diff = np.abs(px(tiled) - px(whole))
    assert diff.max() <= 1, diff.max()  # float rounding only: the blend hides no seam because there is none
    # the deep ESRGAN sees further than the overlap: close, not equal, and no visible seam
    a = registry.upscale(img, 4, "tiny-rrdb-x4", tile=0)
    b = registry.upscale(img, 4, "tiny-rrdb-x4", tile=40, overlap=16)
    assert np.abs(px(a) - px(b)).mean() < 1.0


def test_arbitrary_factor_repeats_the_model_then_lanczos(registry: Any, data_dir: Path) -> None:
    img = photo(30, 20, seed=4)
    out = registry.upscale(img, 3, "tiny-compact-x2", tile=0)
    once = Image.fromarray(spandrel_direct(data_dir / "models/RealESRGAN/tiny-compact-x2.pth", img))
    twice = Image.fromarray(spandrel_direct(data_dir / "models/RealESRGAN/tiny-compact-x2.pth", once))
    assert out.size == (90, 60)
    assert np.array_equal(np.asarray(out), np.asarray(twice.resize((90, 60), Image.Resampling.LANCZOS)))
    # smaller than the model's factor: one pass, then down to the target
    half = registry.upscale(img, 1.5, "tiny-compact-x2", tile=0)
    assert np.array_equal(np.asarray(half), np.asarray(once.resize((45, 30), Image.Resampling.LANCZOS)))


def test_lanczos_and_nearest_are_pils(registry: Any) -> None:
    img = photo(41, 29, seed=5)
    assert np.array_equal(np.asarray(registry.upscale(img, 2.5, "Lanczos")),
                          np.asarray(img.resize((102, 72), Image.Resampling.LANCZOS)))
    assert np.array_equal(np.asarray(registry.upscale(img, 2, "Nearest")),
                          np.asarray(img.resize((82, 58), Image.Resampling.NEAREST)))
    assert registry.upscale(img, 2, "None") is img
    from webui.imaging.upscalers import UpscalerError
    with pytest.raises(UpscalerError, match="largest side allowed is 16384"):
        registry.upscale(Image.new("RGB", (5000, 10)), 4, "Lanczos")
    with pytest.raises(UpscalerError, match="over the 16384 px limit"):
        registry.upscale(Image.new("RGB", (8192, 4)), 1.5, "tiny-rrdb-x4")


def test_flags_choose_the_folders(tmp_path: Path) -> None:
    from webui.cli import parse_args, resolve_paths
    paths = resolve_paths(parse_args(["--models-dir", str(tmp_path / "m"), "--esrgan-models-path", str(tmp_path / "e"),
                                      "--realesrgan-models-path", str(tmp_path / "r"),
                                      "--swinir-models-path", str(tmp_path / "s")]))
    assert paths.upscaler_folders() == {"ESRGAN": tmp_path / "e", "RealESRGAN": tmp_path / "r", "SwinIR": tmp_path / "s",
                                        "DAT": tmp_path / "m" / "DAT", "HAT": tmp_path / "m" / "HAT"}


# ---------------------------------------------------------------- the service


@pytest.fixture(scope="module")
def service(data_dir: Path, registry: Any) -> Iterator[Any]:
    from webui.services.extras import ExtrasService
    from webui.services.jobs import JobQueue
    from webui.settings import Settings

    queue = JobQueue()
    yield ExtrasService(registry, Settings.load(data_dir / "svc-config.json"), data_dir / "svc-outputs", queue)
    queue.close()


def params(**kw: Any) -> Any:
    from webui.services.extras import ExtrasParams
    return ExtrasParams(**kw)


def with_parameters(img: Image.Image, text: str) -> Image.Image:
    buf = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    img.save(buf, "PNG", pnginfo=info)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_scale_by_saves_with_parameters_and_postprocess_infotext(service: Any, data_dir: Path) -> None:
    src = with_parameters(photo(32, 24), "a cat\nSteps: 20, Seed: 7")
    res = service.submit([(src, None)], params(upscaler_1="Lanczos", upscaling_resize=2), save=True).result()
    assert res.infotexts == ["Postprocess upscale by: 2, Postprocess upscaler: Lanczos"]
    assert res.html_info == "<p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p>"
    saved = Image.open(res.saved[0])
    assert res.saved[0].parent == data_dir / "svc-outputs" / "extras-images"
    assert res.saved[0].name.endswith(".png") and res.saved[0].stem.isdigit()
    assert saved.size == (64, 48)
    assert saved.info["parameters"] == "a cat\nSteps: 20, Seed: 7"
    assert saved.info["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    assert np.array_equal(np.asarray(saved.convert("RGB")),
                          np.asarray(photo(32, 24).resize((64, 48), Image.Resampling.LANCZOS)))


def test_upscaler_2_visibility_blends(service: Any) -> None:
    img = photo(20, 16, seed=6)
    out, info = service.upscale_image(img, params(upscaler_1="Lanczos", upscaler_2="tiny-compact-x2",
                                                  extras_upscaler_2_visibility=0.3, upscaling_resize=2))
    lan = img.resize((40, 32), Image.Resampling.LANCZOS)
    model = service.upscalers.upscale(img, 2, "tiny-compact-x2")
    assert np.array_equal(np.asarray(out), np.asarray(Image.blend(lan, model, 0.3)))
    assert info == {"Postprocess upscale by": 2, "Postprocess upscaler": "Lanczos",
                    "Postprocess upscaler 2": "tiny-compact-x2"}
    same, _ = service.upscale_image(img, params(upscaler_1="Lanczos", upscaler_2="tiny-compact-x2",
                                                extras_upscaler_2_visibility=0.0, upscaling_resize=2))
    assert np.array_equal(np.asarray(same), np.asarray(lan))


def test_scale_to_crop_centre_and_max_side(service: Any) -> None:
    img = photo(64, 48, seed=7)
    out, info = service.upscale_image(img, params(resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=100,
                                                  upscaling_crop=True, upscaler_1="Lanczos"))
    big = img.resize((133, 100), Image.Resampling.LANCZOS)  # scale max(100/64, 100/48) covers the box
    assert out.size == (100, 100)
    assert np.array_equal(np.asarray(out), np.asarray(big.crop((16, 0, 116, 100))))  # centred
    assert info == {"Postprocess upscale to": "100x100", "Postprocess crop to": "100x100",
                    "Postprocess upscaler": "Lanczos"}
    loose, _ = service.upscale_image(img, params(resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=100,
                                                 upscaling_crop=False, upscaler_1="Lanczos"))
    assert loose.size == (133, 100)
    capped, info = service.upscale_image(img, params(upscaling_resize=4, max_side_length=200, upscaler_1="Lanczos"))
    assert capped.size == (200, 150) and info["Max side length"] == 200


def test_directory_batch_skips_broken_files(service: Any, tmp_path: Path) -> None:
    from webui.services.extras import ExtrasError

    src = tmp_path / "in"
    src.mkdir()
    with_parameters(photo(16, 12), "kept text").save(src / "a.png", pnginfo=_png_text("parameters", "kept text"))
    photo(10, 10, seed=2).save(src / "b.jpg", quality=95)
    (src / "broken.png").write_bytes((src / "a.png").read_bytes()[:60])
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    res = service.submit_directory(str(src), str(out), params(upscaler_1="tiny-compact-x2", upscaling_resize=2)).result()
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert Image.open(out / "a.png").size == (32, 24) and Image.open(out / "b.png").size == (20, 20)
    assert Image.open(out / "a.png").info["parameters"] == "kept text"
    assert [e.split(":")[0] for e in res.errors] == ["broken.png", "notes.txt"], res.errors
    assert "could not be decoded" in res.errors[0] and "not an image PIL can read" in res.errors[1]
    # again into the same folder: A1111's save_images_replace_action decides (default "Replace")
    service.submit_directory(str(src), str(out), params(upscaler_1="Lanczos")).result()
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert "Postprocess upscaler: Lanczos" in Image.open(out / "a.png").info["postprocessing"]
    service.settings.update({"save_images_replace_action": "Add number suffix", "use_upscaler_name_as_suffix": True})
    service.submit_directory(str(src), str(out), params(upscaler_1="Lanczos")).result()
    service.submit_directory(str(src), str(out), params(upscaler_1="Lanczos")).result()
    assert sorted(p.name for p in out.iterdir()) == ["a-Lanczos-1.png", "a-Lanczos.png", "a.png",
                                                     "b-Lanczos-1.png", "b-Lanczos.png", "b.png"]
    service.settings.update({"use_original_name_batch": False, "use_upscaler_name_as_suffix": False,
                             "outdir_samples": str(tmp_path / "everything")})
    service.submit_directory(str(src), "", params(upscaler_1="Lanczos")).result()
    assert sorted(p.name for p in (tmp_path / "everything").iterdir()) == ["00000.png", "00001.png"]
    with pytest.raises(ExtrasError, match="does not exist"):
        service.submit_directory(str(tmp_path / "missing"), "", params(upscaler_1="Lanczos"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExtrasError, match="has no files"):
        service.submit_directory(str(tmp_path / "empty"), "", params(upscaler_1="Lanczos"))
    with pytest.raises(ExtrasError, match="not selected"):
        service.submit_directory("  ", "", params(upscaler_1="Lanczos"))


def _png_text(k: str, v: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(k, v)
    return info


# ---------------------------------------------------------------- API against the real server


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[Server]:
    s = start_server(data_dir, data_dir / "models" / "Stable-diffusion", "--skip-load-model-at-start",
                     "--dat-models-path", str(data_dir / "elsewhere"), nowebui=False)
    yield s
    stop_server(s)


def b64png(img: Image.Image, prefix: bool = False) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return "data:image/png;base64," + data if prefix else data


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_api_upscalers_list(server: Server) -> None:
    items = requests.get(server.api("upscalers"), timeout=60).json()
    by = {i["name"]: i for i in items}
    assert [i["name"] for i in items[:3]] == ["None", "Lanczos", "Nearest"]
    assert set(items[0]) >= {"name", "model_name", "model_path", "model_url", "scale"}
    assert by["tiny-compact-x2"]["scale"] == 2 and by["tiny-compact-x2"]["model_path"].endswith("tiny-compact-x2.pth")
    assert by["tiny-rrdb-x4"]["scale"] == 4 and "error" not in by["tiny-rrdb-x4"]
    assert "not an upscaler architecture" in by["foreign"]["error"]
    assert by["tiny-dat-flag"]["scale"] == 3 and Path(by["tiny-dat-flag"]["model_path"]).parent.name == "elsewhere"
    rs = requests.get(server.api("realesrgan-models"), timeout=30).json()
    assert sorted(r["name"] for r in rs) == ["R-ESRGAN General 4xV3", "tiny-compact-x2"]


@pytest.mark.parametrize("prefix", [False, True])
def test_api_single_image_lanczos(server: Server, prefix: bool) -> None:
    img = photo(40, 30, seed=8)
    r = requests.post(server.api("extra-single-image"), json={"image": b64png(img, prefix), "upscaler_1": "Lanczos",
                                                              "upscaling_resize": 2}, timeout=60)
    assert r.status_code == 200, r.text
    out = decode(r.json()["image"])
    assert out.size == (80, 60)
    assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(img.resize((80, 60), Image.Resampling.LANCZOS)))
    assert r.json()["html_info"] == "<p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p>"
    assert out.info["postprocessing"] == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"


def test_api_model_upscale_and_batch(server: Server, data_dir: Path) -> None:
    img = photo(24, 18, seed=9)
    r = requests.post(server.api("extra-single-image"), json={"image": b64png(img), "upscaler_1": "tiny-compact-x2",
                                                              "upscaling_resize": 2}, timeout=60)
    assert r.status_code == 200, r.text
    assert np.array_equal(np.asarray(decode(r.json()["image"]).convert("RGB")),
                          spandrel_direct(data_dir / "models/RealESRGAN/tiny-compact-x2.pth", img))
    r = requests.post(server.api("extra-batch-images"), timeout=60, json={
        "imageList": [{"data": b64png(img), "name": "a.png"}, {"data": b64png(photo(10, 8), True), "name": "b.png"}],
        "upscaler_1": "Nearest", "resize_mode": 1, "upscaling_resize_w": 30, "upscaling_resize_h": 30})
    assert r.status_code == 200, r.text
    assert [decode(i).size for i in r.json()["images"]] == [(30, 30), (30, 30)]
    assert "Postprocess upscale to: 30x30" in r.json()["html_info"]
    assert not (data_dir / "outputs" / "extras-images").exists()  # the API does not save (as A1111)


def test_webuiapi_client(server: Server, data_dir: Path) -> None:
    """PyPI's webuiapi (an A1111 client) unchanged: upscaler list, single and batch extras."""
    webuiapi = pytest.importorskip("webuiapi")
    api = webuiapi.WebUIApi(host="127.0.0.1", port=int(server.url.rsplit(":", 1)[1]))
    assert "tiny-rrdb-x4" in [u["name"] for u in api.get_upscalers()]
    img = photo(20, 15, seed=11)
    r = api.extra_single_image(img, upscaler_1="tiny-rrdb-x4", upscaling_resize=4)
    assert np.array_equal(np.asarray(r.image.convert("RGB")),
                          spandrel_direct(data_dir / "models/ESRGAN/tiny-rrdb-x4.pth", img))
    r = api.extra_batch_images([img, photo(8, 6)], name_list=["a.png", "b.png"], upscaler_1="Lanczos")
    assert [i.size for i in r.images] == [(40, 30), (16, 12)]


def test_api_bad_input_is_4xx_and_server_keeps_serving(server: Server) -> None:
    good = b64png(photo(8, 8))
    buf = io.BytesIO()
    Image.new("L", (8200, 4)).save(buf, "PNG")  # bigger than MAX_INPUT_SIDE, tiny file
    cases = [
        ({"image": base64.b64encode(b"hello, not an image").decode(), "upscaler_1": "Lanczos"}, "not an image"),
        ({"image": base64.b64encode(base64.b64decode(good)[:50]).decode(), "upscaler_1": "Lanczos"}, "decoded"),
        ({"image": base64.b64encode(buf.getvalue()).decode(), "upscaler_1": "Lanczos"}, "largest side"),
        ({"image": good, "upscaler_1": "nope"}, "unknown upscaler 'nope'"),
        ({"image": good, "upscaler_1": "broken"}, "corrupt"),
        ({"image": good, "upscaler_1": "evil"}, "refused"),
        ({"image": "", "upscaler_1": "Lanczos"}, "empty"),
        ({"image": good, "upscaler_1": "Lanczos", "gfpgan_visibility": 1}, "face restoration"),
        ({"image": good, "upscaler_1": "Lanczos", "upscaling_resize": 0}, "greater than 0"),
    ]
    for body, words in cases:
        r = requests.post(server.api("extra-single-image"), json=body, timeout=60)
        assert 400 <= r.status_code < 500 and words in r.text, (body.get("upscaler_1"), r.status_code, r.text)
    r = requests.post(server.api("extra-batch-images"), timeout=60, json={
        "imageList": [{"data": good, "name": "ok.png"}, {"data": "bm90IGFuIGltYWdl", "name": "bad.png"}],
        "upscaler_1": "Lanczos"})
    assert r.status_code == 400 and "bad.png" in r.text
    r = requests.post(server.api("extra-single-image"), json={"image": good, "upscaler_1": "Lanczos"}, timeout=60)
    assert r.status_code == 200 and decode(r.json()["image"]).size == (16, 16)


# ---------------------------------------------------------------- the tab in a browser

SCREENSHOT = Path("/tmp/ui_extras.png")


@pytest.mark.browser
def test_extras_tab_upscales_lanczos_x2(browser: Any, server: Server, tmp_path: Path) -> None:
    src = tmp_path / "source.png"
    photo(48, 36, seed=10).save(src, pnginfo=_png_text("parameters", "a test picture\nSteps: 5, Seed: 1"))
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.get_by_role("tab", name="Extras").click()
    page.locator("#extras_image input[type=file]").set_input_files(str(src))
    page.locator("#extras_image img").first.wait_for()
    page.locator("#extras_upscaler_1 input").click()
    page.locator("#extras_upscaler_1").get_by_role("option", name="Lanczos", exact=True).click()
    box = page.locator("#extras_upscaling_resize input[type=number]")
    box.fill("2")
    box.press("Enter")
    page.click("#extras_generate")
    page.wait_for_function("() => document.querySelector('#extras_html_info').innerText.includes('Postprocess')")
    page.wait_for_function("() => { const i = document.querySelector('#extras_gallery img'); "
                           "return i && i.complete && i.naturalWidth > 0; }")
    size = page.locator("#extras_gallery img").first.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    info = page.inner_text("#extras_html_info")
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    ctx.close()
    assert size == [96, 72]
    assert "Postprocess upscale by: 2, Postprocess upscaler: Lanczos" in info
    assert "Saved 1 image" in info
    saved = sorted((server.data_dir / "outputs" / "extras-images").glob("*.png"))
    assert len(saved) == 1 and Image.open(saved[0]).size == (96, 72)
    assert Image.open(saved[0]).info["parameters"] == "a test picture\nSteps: 5, Seed: 1"
    assert not errors, errors
