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
    # without current options (a request's `infotext`) every option the infotext names is overridden
    assert req["override_settings"] == {"sd_model_checkpoint": "6ce0161689", "CLIP_stop_at_last_layers": 2,
                                        "emphasis": "Original", "randn_source": "GPU"}
    defaults = {"CLIP_stop_at_last_layers": 1, "randn_source": "CPU", "emphasis": "Original",
                "eta_noise_seed_delta": 0, "sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
                "sd_checkpoint_hash": "6ce0161689" + "0" * 54}
    ui = infotext_to_request(parse_generation_parameters(A1111_TEXT), defaults)
    # the UI's paste: only what differs from the current settings; the loaded model is not named
    assert ui["override_settings"] == {"CLIP_stop_at_last_layers": 2, "randn_source": "GPU"}

    plain = infotext_to_request(parse_generation_parameters(
        "x\nSteps: 4, Sampler: DPM++ 2M Karras, Seed: 3, ENSD: 31337, RNG: CPU"), defaults)
    assert plain["enable_hr"] is False and "hr_scale" not in plain
    assert plain["sampler_name"] == "DPM++ 2M" and plain["scheduler"] == "karras"  # pre-1.9 glued name
    assert plain["override_settings"] == {"eta_noise_seed_delta": 31337}
    auto = infotext_to_request(parse_generation_parameters("x\nSteps: 4, Sampler: Euler a, Seed: 3, RNG: CPU"),
                               defaults)
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


# ---------------------------------------------------------------- Version and back-compatibility


def _a1111_parse_version(text):
    """A1111's modules/infotext_versions.parse_version, verbatim in behaviour (kept apart from ours)."""
    import re

    from packaging import version
    if text is None:
        return None
    m = re.match(r'([^-]+-[^-]+)-.*', text)
    if m:
        text = m.group(1)
    try:
        return version.parse(text)
    except Exception:
        return None


def test_our_version_is_not_read_as_an_old_a1111() -> None:
    from packaging import version

    from webui.infotext import parse_version
    from webui.version import VERSION
    for parse in (_a1111_parse_version, parse_version):
        v = parse(VERSION)  # None, or at least A1111's newest threshold (1.8.0-139, hires-prompt styles)
        assert v is None or v >= version.parse("1.8.0-139"), (VERSION, v)
    # an image of ours with prompt editing, DDIM and a refiner pastes back without any old-behaviour flag
    text = create_infotext("a [red:yellow:0.5] star", "", {"Steps": 4, "Sampler": "DDIM", "Seed": 1,
                                                             "Refiner": "r [0123456789]", "Version": VERSION})
    p = parse_generation_parameters(text)
    assert p["Version"] == VERSION
    for flag in ("Old prompt editing timelines", "Pad conds v0", "Downcast alphas_cumprod"):
        assert flag not in p
    assert p["Refiner switch by sampling steps"] is False
    req = infotext_to_request(p, {"use_old_scheduling": False, "use_downcasted_alpha_bar": False})
    assert not {"use_old_scheduling", "use_downcasted_alpha_bar"} & set(req.get("override_settings", {}))


def test_version_rules_follow_a1111() -> None:
    from webui.infotext import parse_version
    cases = ["v1.10.1", "v1.6.0-RC-12-gabcdef0", "v1.7.0-225", "v1.7.0-224-g0123abc", "v1.7.0-225-g0123abc",
             "f2.0.1v1.10.1-previous-665-gae278f79", "f0.0.17v1.8.0rc-latest-276-g29be1da7", "v0.1.0",
             "webui-v0.1.0", "1.5.2", "garbage", "", "v1.8.0-139", "1.8.0-RC"]
    for text in cases:
        assert parse_version(text) == _a1111_parse_version(text), text

    def flags(version: str, prompt: str = "a [b:c:0.5]", sampler: str = "Euler a", refiner: str = "") -> set[str]:
        extra = f", Refiner: {refiner}" if refiner else ""
        p = parse_generation_parameters(f"{prompt}\nSteps: 4, Sampler: {sampler}, Seed: 1{extra}, Version: {version}")
        return {k for k in ("Old prompt editing timelines", "Pad conds v0", "Downcast alphas_cumprod")
                if p.get(k) is True} | ({"Refiner switch by sampling steps"}
                                        if p["Refiner switch by sampling steps"] is True else set())
    old = {"Old prompt editing timelines", "Downcast alphas_cumprod"}
    assert flags("v1.5.2") == old
    assert flags("v1.6.0-RC-12-gabcdef0") == old  # 1.6.0rc0 < 1.6.0 (a release candidate is older)
    assert flags("v1.6.0") == {"Downcast alphas_cumprod"}
    assert flags("v1.7.0-224-g0123abc") == {"Downcast alphas_cumprod"}
    assert flags("v1.7.0-225-g0123abc") == set()
    assert flags("v1.7.0", refiner="r [01]") == {"Downcast alphas_cumprod", "Refiner switch by sampling steps"}
    assert flags("v1.5.1", prompt="plain", sampler="DDIM") == {"Pad conds v0", "Downcast alphas_cumprod"}
    assert flags("f2.0.1v1.10.1-previous-665-gae278f79") == set()  # Forge: no A1111 version
    assert flags("v0.1.0") == old  # what we wrote before: a valid version below 1.6 (hence the change)
    assert flags("webui-v0.1.0") == set()


# ---------------------------------------------------------------- A1111 keys that fill the request

A1111_FULL = (
    "a tiled floor\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: Euler, Schedule type: Karras, CFG scale: 7, Seed: 42, Face restoration: CodeFormer, "
    "Size: 512x512, Model hash: 6ce0161689, Model: v1-5, Denoising strength: 0.5, RNG: GPU, Tiling: True, "
    "NGMS: 0.5, Eta: 0.67, Sigma churn: 0.5, Sigma tmin: 0.1, Sigma tmax: 10, Sigma noise: 1.003, "
    "Hires upscale: 2, Hires steps: 5, Hires upscaler: Latent, Hires checkpoint: other [abcdef0123], "
    "Hires sampler: DPM++ 2M, Hires schedule type: Exponential, "
    "Refiner: refiner-xl [0123456789], Refiner switch at: 0.8, Version: v1.10.1"
)


def test_a1111_keys_fill_request_fields_and_overrides() -> None:
    p = parse_generation_parameters(A1111_FULL)
    current = {"randn_source": "CPU", "face_restoration": False, "s_min_uncond": 0.0, "s_churn": 0.0,
               "s_tmin": 0.0, "s_tmax": 0.0, "s_noise": 1.0, "eta_ancestral": 1.0, "CLIP_stop_at_last_layers": 1,
               "sd_model_checkpoint": "v1-5.safetensors [6ce0161689]", "sd_checkpoint_hash": "6ce0161689ab"}
    req = infotext_to_request(p, current)
    assert req["tiling"] is True and req["restore_faces"] is True
    assert req["refiner_checkpoint"] == "refiner-xl [0123456789]" and req["refiner_switch_at"] == 0.8
    assert req["enable_hr"] is True and req["hr_checkpoint_name"] == "other [abcdef0123]"
    assert req["hr_sampler_name"] == "DPM++ 2M" and req["hr_scheduler"] == "exponential"
    assert req["hr_scale"] == 2.0 and req["hr_second_pass_steps"] == 5 and req["hr_upscaler"] == "Latent"
    assert req["s_min_uncond"] == 0.5 and req["eta"] == 0.67
    assert (req["s_churn"], req["s_tmin"], req["s_tmax"], req["s_noise"]) == (0.5, 0.1, 10.0, 1.003)
    assert req["sampler_name"] == "Euler" and req["scheduler"] == "karras"
    # option-backed keys that differ from the current settings; the loaded model is not named
    assert req["override_settings"] == {
        "randn_source": "GPU", "face_restoration": True, "s_min_uncond": 0.5, "eta_ancestral": 0.67,
        "s_churn": 0.5, "s_tmin": 0.1, "s_tmax": 10.0, "s_noise": 1.003}
    # another model loaded: A1111's `Model hash: <hash>`, never the name
    other = infotext_to_request(p, dict(current, sd_model_checkpoint="x.safetensors [ffffffffff]",
                                        sd_checkpoint_hash="ffffffffff00"))
    assert other["override_settings"]["sd_model_checkpoint"] == "6ce0161689"
    # "Eta DDIM" is DDIM's eta
    ddim = infotext_to_request(parse_generation_parameters("x\nSteps: 4, Sampler: DDIM, Seed: 1, Eta DDIM: 0.3"), {})
    assert ddim["eta"] == 0.3 and ddim["override_settings"]["eta_ddim"] == 0.3


def test_override_chips_show_only_changed_settings_under_infotext_names() -> None:
    from webui.settings import OPTIONS, OptionInfo
    from webui.ui.paste import override_entries, parse_override_entries
    from webui.version import VERSION
    current = {"CLIP_stop_at_last_layers": 1, "randn_source": "CPU", "eta_noise_seed_delta": 0,
               "sd_model_checkpoint": "mine.safetensors [abcdef0123]", "sd_checkpoint_hash": "abcdef0123" + "9" * 54,
               "emphasis": "Original", "use_old_scheduling": False, "use_downcasted_alpha_bar": False}
    ours = ("a [red:yellow:0.5] circle\nSteps: 6, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 5, "
            f"Size: 64x64, Model hash: abcdef0123, Model: mine, RNG: CPU, Version: {VERSION}")
    req = infotext_to_request(parse_generation_parameters(ours), current)
    assert override_entries(req.get("override_settings") or {}) == []  # nothing differs: no chips
    theirs = ("cat\nSteps: 20, Sampler: Euler a, Seed: 5, Size: 512x512, Model hash: 6ce0161689, Model: v1-5, "
              "Clip skip: 2, ENSD: 31337, Version: v1.5.1")
    req = infotext_to_request(parse_generation_parameters(theirs), current)
    entries = override_entries(req["override_settings"])
    assert entries == ["Model hash: 6ce0161689", "Clip skip: 2", "ENSD: 31337", "RNG: GPU",
                       "Downcast alphas_cumprod: True"]
    back = parse_override_entries(entries)
    assert back == {"sd_model_checkpoint": "6ce0161689", "CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337,
                    "randn_source": "GPU", "use_downcasted_alpha_bar": True}
    # entries naming no option are ignored (A1111), keys without an infotext name are not shown
    assert parse_override_entries(["Bogus: 1", "no colon", "Clip skip:3"]) == {"CLIP_stop_at_last_layers": 3}
    assert override_entries({"randn_source": "NV", "samples_save": False}) == ["RNG: NV"]
    # an extension's option, from its Settings' table
    table = dict(OPTIONS, myext_strength=OptionInfo(0.5, "My strength", "Ext", infotext="My strength"))
    assert override_entries({"myext_strength": 0.7}, table) == ["My strength: 0.7"]
    assert parse_override_entries(["My strength: 0.7"], table) == {"myext_strength": 0.7}
