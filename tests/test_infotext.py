"""Infotext: A1111 layout, parsing grammar, and reading it back from real image files."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, PngImagePlugin

from webui.infotext import (
    PARAM_ORDER, build_params, create_infotext, decode_user_comment, encode_user_comment,
    infotext_to_request, make_exif, parse_generation_parameters, quote, read_info_from_image,
)

A1111_TEXT = (
    "a castle on a hill, (masterpiece:1.2)\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3528893142, Size: 512x512, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.7, Clip skip: 2, "
    "Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent, "
    'Lora hashes: "foo: 0123456789ab, bar: ba9876543210", Version: v1.10.1'
)


def test_parse_a1111_text_verbatim() -> None:
    p = parse_generation_parameters(A1111_TEXT)
    assert p["Prompt"] == "a castle on a hill, (masterpiece:1.2)"
    assert p["Negative prompt"] == "blurry, lowres"
    assert p["Steps"] == "20" and p["Sampler"] == "DPM++ 2M" and p["Schedule type"] == "Karras"
    assert p["CFG scale"] == "7" and p["Seed"] == "3528893142"
    assert p["Size-1"] == "512" and p["Size-2"] == "512" and "Size" not in p
    assert p["Model hash"] == "6ce0161689" and p["Model"] == "v1-5-pruned-emaonly"
    assert p["Denoising strength"] == "0.7" and p["Clip skip"] == "2"
    assert p["Hires upscale"] == "2" and p["Hires steps"] == "10" and p["Hires upscaler"] == "Latent"
    assert p["Lora hashes"] == "foo: 0123456789ab, bar: ba9876543210"  # json-unquoted
    assert p["Version"] == "v1.10.1"
    # defaults A1111 inserts for missing keys
    assert p["Hires resize-1"] == 0 and p["Hires resize-2"] == 0
    assert p["Hires sampler"] == "Use same sampler"
    assert p["Hires schedule type"] == "Use same scheduler"
    assert p["Hires checkpoint"] == "Use same checkpoint"
    assert p["Hires prompt"] == "" and p["Hires negative prompt"] == ""
    assert p["RNG"] == "GPU" and p["FP8 weight"] == "Disable"
    assert p["VAE Encoder"] == "Full" and p["VAE Decoder"] == "Full"
    assert p["Schedule max sigma"] == 0 and p["Schedule rho"] == 0
    assert p["Mask mode"] == "Inpaint masked" and p["Masked area padding"] == 32
    assert p["Emphasis"] == "Original"  # prompt uses (x:1.2)
    assert p["Refiner switch by sampling steps"] is False
    assert "Downcast alphas_cumprod" not in p  # v1.10.1 is new enough


def test_parse_defaults_without_emphasis_and_old_version_flags() -> None:
    p = parse_generation_parameters("plain cat\nSteps: 20, Sampler: DDIM, Seed: 1, Version: v1.5.1")
    assert p["Clip skip"] == "1" and p["Schedule type"] == "Automatic"
    assert "Emphasis" not in p
    assert p["Pad conds v0"] is True and p["Downcast alphas_cumprod"] is True
    # unbalanced/escaped brackets and weight 1 are not emphasis
    assert "Emphasis" not in parse_generation_parameters(r"a \(literal\) (b:1)" "\nSteps: 1, Seed: 2, CFG scale: 3")
    assert parse_generation_parameters("[a]\nSteps: 1, Seed: 2, CFG scale: 3")["Emphasis"] == "Original"


def test_multiline_prompt_and_negative() -> None:
    text = "line one\nline two\nNegative prompt: bad\nworse\nSteps: 5, Sampler: Euler a, CFG scale: 4.5, Seed: 9"
    p = parse_generation_parameters(text)
    assert p["Prompt"] == "line one\nline two"
    assert p["Negative prompt"] == "bad\nworse"
    assert p["CFG scale"] == "4.5" and p["Seed"] == "9"


def test_no_negative_prompt() -> None:
    p = parse_generation_parameters("just a prompt\nSteps: 20, Sampler: Euler a, Seed: 5")
    assert p["Prompt"] == "just a prompt" and p["Negative prompt"] == ""
    assert p["Steps"] == "20"


def test_last_line_with_fewer_than_three_params_is_prompt() -> None:
    text = "a photo\nstyle: anime, mood: calm"
    p = parse_generation_parameters(text)
    assert p["Prompt"] == "a photo\nstyle: anime, mood: calm"
    assert "style" not in p and "Steps" not in p


def test_quoting_values() -> None:
    assert quote("plain") == "plain"
    assert quote("a, b") == '"a, b"'
    assert quote("k: v") == '"k: v"'
    assert quote("two\nlines") == '"two\\nlines"'
    assert quote('say "hi", ok') == '"say \\"hi\\", ok"'
    assert quote("ünïcode, ok") == '"ünïcode, ok"'  # ensure_ascii=False


def test_create_infotext_layout_and_floats() -> None:
    params = build_params(
        {"Version": "v1.10.1", "Steps": 20, "Sampler": "Euler a", "Seed": 1, "CFG scale": 7.0,
         "Size": "512x768", "Clip skip": None, "Schedule type": "Automatic", "Tiling": "Tiling"},
        {"Schedule type": "Karras", "Hires upscale": 2.0, "Lora hashes": "a: 1, b: 2", "Denoising strength": 0.5},
    )
    assert list(params) == ["Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Clip skip",
                            "Tiling", "Hires upscale", "Lora hashes", "Denoising strength", "Version"]
    text = create_infotext("cat", "", params)
    assert text == ("cat\nSteps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1, "
                    'Size: 512x768, Tiling, Hires upscale: 2, Lora hashes: "a: 1, b: 2", '
                    "Denoising strength: 0.5, Version: v1.10.1")
    assert create_infotext("p", "n", {"CFG scale": 7.5, "Steps": 1}) == "p\nNegative prompt: n\nCFG scale: 7.5, Steps: 1"
    assert PARAM_ORDER[:4] == ("Steps", "Sampler", "Schedule type", "CFG scale") and PARAM_ORDER[-2:] == ("Version", "User")


def test_round_trip() -> None:
    prompt = "a (red:1.3) fox,\nin snow"
    neg = "ugly: very, blurry"
    params = {"Steps": 30, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 6.5, "Seed": 42,
              "Size": "640x448", "Model hash": "abcdef0123", "Model": "my model", "Hires prompt": "line1\nline2, x",
              "TI hashes": 'emb: 1234, "q": 5', "Version": "v1.10.1"}
    text = create_infotext(prompt, neg, params)
    p = parse_generation_parameters(text)
    assert p["Prompt"] == prompt and p["Negative prompt"] == neg
    assert p["Steps"] == "30" and p["CFG scale"] == "6.5" and p["Seed"] == "42"
    assert (p["Size-1"], p["Size-2"]) == ("640", "448")
    assert p["Model"] == "my model" and p["Hires prompt"] == "line1\nline2, x"
    assert p["TI hashes"] == 'emb: 1234, "q": 5'


def test_infotext_to_request() -> None:
    req = infotext_to_request(parse_generation_parameters(A1111_TEXT))
    assert req["prompt"] == "a castle on a hill, (masterpiece:1.2)"
    assert req["steps"] == 20 and req["cfg_scale"] == 7.0 and req["seed"] == 3528893142
    assert req["sampler_name"] == "DPM++ 2M" and req["scheduler"] == "karras"
    assert req["width"] == 512 and req["height"] == 512 and req["denoising_strength"] == 0.7
    assert req["enable_hr"] is True and req["hr_scale"] == 2.0 and req["hr_second_pass_steps"] == 10
    assert req["hr_upscaler"] == "Latent" and "hr_sampler_name" not in req
    assert req["override_settings"] == {"sd_model_checkpoint": "v1-5-pruned-emaonly", "CLIP_stop_at_last_layers": 2}

    plain = infotext_to_request(parse_generation_parameters(
        "x\nSteps: 4, Sampler: DPM++ 2M Karras, Seed: 3, ENSD: 31337, RNG: CPU"))
    assert plain["enable_hr"] is False and "hr_scale" not in plain
    assert plain["sampler_name"] == "DPM++ 2M" and plain["scheduler"] == "karras"  # pre-1.9 glued name
    assert plain["override_settings"] == {"eta_noise_seed_delta": 31337, "randn_source": "CPU"}
    auto = infotext_to_request(parse_generation_parameters("x\nSteps: 4, Sampler: Euler a, Seed: 3"))
    assert auto["scheduler"] == "automatic" and "override_settings" not in auto
    same = infotext_to_request({"RNG": "CPU"}, current_options={"randn_source": "CPU"})
    assert "override_settings" not in same


def test_png_text_and_itxt_chunks(tmp_path: Path) -> None:
    text = "猫の絵, (cute:1.1)\nNegative prompt: ぼやけ\nSteps: 20, Sampler: Euler a, Seed: 1"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)   # non-latin-1: PIL writes iTXt
    info.add_text("extra", "latin text")  # tEXt
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8), "red").save(path, pnginfo=info)
    raw = path.read_bytes()
    assert b"iTXtparameters" in raw and b"tEXtextra" in raw
    with Image.open(path) as img:
        geninfo, items = read_info_from_image(img)
    assert geninfo == text
    assert items == {"extra": "latin text"}

    latin = tmp_path / "y.png"
    info2 = PngImagePlugin.PngInfo()
    info2.add_text("parameters", "cat\nSteps: 1, Seed: 2, CFG scale: 3")
    Image.new("RGB", (4, 4)).save(latin, pnginfo=info2)
    assert b"tEXtparameters" in latin.read_bytes()
    with Image.open(latin) as img:
        assert read_info_from_image(img)[0] == "cat\nSteps: 1, Seed: 2, CFG scale: 3"


def test_jpeg_and_webp_exif_user_comment(tmp_path: Path) -> None:
    for fmt in ("JPEG", "WEBP"):
        path = tmp_path / f"x.{fmt.lower()}"
        Image.new("RGB", (16, 16), "blue").save(path, format=fmt, exif=make_exif(A1111_TEXT + " ünï"))
        with Image.open(path) as img:
            geninfo, items = read_info_from_image(img)
        assert geninfo == A1111_TEXT + " ünï"
        assert "exif" not in items


def test_user_comment_decoding_variants() -> None:
    assert encode_user_comment("ab")[:8] == b"UNICODE\0"
    assert decode_user_comment(b"UNICODE\0" + "hi there".encode("utf-16-be")) == "hi there"
    assert decode_user_comment(b"UNICODE\0" + "hi there".encode("utf-16-le")) == "hi there"
    assert decode_user_comment(b"ASCII\0\0\0plain") == "plain"


def test_gif_comment_and_no_info(tmp_path: Path) -> None:
    path = tmp_path / "x.gif"
    Image.new("P", (4, 4)).save(path, comment=b"cat\nSteps: 1, Seed: 2, CFG scale: 3")
    with Image.open(path) as img:
        assert read_info_from_image(img)[0] == "cat\nSteps: 1, Seed: 2, CFG scale: 3"
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    with Image.open(plain) as img:
        assert read_info_from_image(img) == (None, {})
