"""A1111-compatible generation-parameter text ("infotext"): write, parse, read from images.

Layout (reference notes §2.1):
    <prompt, possibly several lines>
    Negative prompt: <negative>          (omitted when empty)
    Steps: 20, Sampler: Euler a, ..., Version: v1.10.1
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping

from packaging import version as _pkg_version  # a dependency of transformers/accelerate/diffusers
from PIL import Image

# A1111's dict-literal order in processing.create_infotext; extra generation
# params are inserted before the trailing Version/User keys.
PARAM_ORDER: tuple[str, ...] = (
    "Steps", "Sampler", "Schedule type", "CFG scale", "Image CFG scale", "Seed",
    "Face restoration", "Size", "Model hash", "Model", "FP8 weight",
    "Cache FP16 weight for LoRA", "VAE hash", "VAE", "Variation seed",
    "Variation seed strength", "Seed resize from", "Denoising strength",
    "Conditional mask weight", "Clip skip", "ENSD", "Token merging ratio",
    "Token merging ratio hr", "Init image hash", "RNG", "Tiling",
    "Version", "User",
)
TAIL_KEYS: tuple[str, ...] = ("Version", "User")  # come after the extra params

# A1111's pattern with the key's length bounded: keys are short, and an unbounded key made a long line
# of words without a colon take quadratic time (100k characters: ~50 s)
re_param = re.compile(r'\s*(\w[\w \-/]{0,120}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
re_imagesize = re.compile(r"^(\d+)x(\d+)$")

# ---------------------------------------------------------------- writing


def format_value(v: object) -> str:
    """str() except integral floats print without '.0' (CFG scale 7.0 -> "7")."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return str(int(v))
    return str(v)


def quote(text: object) -> str:
    """JSON-quote a value only when it would break the `k: v, k: v` grammar."""
    s = format_value(text)
    if "," not in s and ":" not in s and "\n" not in s:
        return s
    return json.dumps(s, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text  # A1111 keeps malformed quoted values verbatim


def build_params(ordered_known: Mapping[str, object], extra: Mapping[str, object]) -> dict[str, object]:
    """Order params like A1111: known keys in PARAM_ORDER, then extras, then Version/User.

    An extra key that already exists (e.g. "Schedule type") keeps its earlier
    position but takes the new value — plain dict.update semantics.
    """
    res: dict[str, object] = {k: ordered_known[k] for k in PARAM_ORDER
                              if k in ordered_known and k not in TAIL_KEYS}
    for k, v in ordered_known.items():  # unknown "known" keys keep caller order
        if k not in res and k not in TAIL_KEYS:
            res[k] = v
    res.update(extra)
    for k in TAIL_KEYS:
        if k in ordered_known:
            res[k] = ordered_known[k]
    return res


def create_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    parts = []
    for k, v in params.items():
        if v is None:
            continue
        parts.append(k if k == format_value(v) else f"{k}: {quote(v)}")
    neg = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{neg}\n{', '.join(parts)}".strip()


# ---------------------------------------------------------------- parsing

# Defaults A1111 inserts for keys missing from the text (infotext_utils).
PARSE_DEFAULTS: dict[str, object] = {
    "Clip skip": "1",
    "Hires resize-1": 0, "Hires resize-2": 0,
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "", "Hires negative prompt": "",
    "Mask mode": "Inpaint masked", "Masked content": "original",
    "Inpaint area": "Whole picture", "Masked area padding": 32,
}
PARSE_DEFAULTS_LATE: dict[str, object] = {  # applied after the old-hires-fix fixup
    "RNG": "GPU", "Schedule type": "Automatic",
    "Schedule max sigma": 0, "Schedule min sigma": 0, "Schedule rho": 0,
    "VAE Encoder": "Full", "VAE Decoder": "Full", "FP8 weight": "Disable",
}

_re_attention = re.compile(r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:")
_re_break = re.compile(r"\s*\bBREAK\b\s*")


def _uses_emphasis(text: str) -> bool:
    """True if A1111's attention parser would give any text a weight != 1."""
    res: list[list[Any]] = []
    rounds: list[int] = []
    squares: list[int] = []

    def mul(start: int, m: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= m

    for m in _re_attention.finditer(text):
        t, w = m.group(0), m.group(1)
        if t.startswith("\\"):
            res.append([t[1:], 1.0])
        elif t == "(":
            rounds.append(len(res))
        elif t == "[":
            squares.append(len(res))
        elif w is not None and rounds:
            mul(rounds.pop(), float(w))
        elif t == ")" and rounds:
            mul(rounds.pop(), 1.1)
        elif t == "]" and squares:
            mul(squares.pop(), 1 / 1.1)
        else:
            res.append([t, 1.0])
    for pos in rounds:
        mul(pos, 1.1)
    for pos in squares:
        mul(pos, 1 / 1.1)
    # BREAK keywords are not "emphasis" even when weighted
    return any(w != 1.0 for t, w in res if _re_break.sub("", t) != "")


# Thresholds of A1111's modules/infotext_versions.py (packaging.version objects, compared as A1111 does).
V160 = _pkg_version.parse("1.6.0")
V170_TSNR = _pkg_version.parse("v1.7.0-225")
V180 = _pkg_version.parse("1.8.0")
V180_HR_STYLES = _pkg_version.parse("1.8.0-139")
_re_version_head = re.compile(r"([^-]+-[^-]+)-.*")


def parse_version(text: object) -> _pkg_version.Version | None:
    """A1111's `infotext_versions.parse_version`, rule for rule: keep what comes before a second '-'
    ("v1.6.0-RC-12-gabc" -> "v1.6.0-RC" -> 1.6.0rc0), then PEP 440; anything else (Forge's
    "f2.0.1v1.10.1-previous-...", our "webui-v0.1.0") is None: no version, no back-compatibility."""
    if text is None:
        return None
    text = str(text)
    m = _re_version_head.match(text)
    if m:
        text = m.group(1)
    try:
        return _pkg_version.parse(text)
    except Exception:  # InvalidVersion (and anything odd in the text), as A1111 catches it
        return None


def _backcompat(res: dict[str, object]) -> None:
    """Flags that make old infotexts reproduce (A1111 `infotext_versions.backcompat`)."""
    ver = parse_version(res.get("Version"))
    if ver is None:
        return
    if ver < V160 and "[" in str(res.get("Prompt", "")):
        res["Old prompt editing timelines"] = True
    if ver < V160 and res.get("Sampler", "") in ("DDIM", "PLMS"):
        res["Pad conds v0"] = True
    if ver < V170_TSNR:
        res["Downcast alphas_cumprod"] = True
    if ver < V180 and res.get("Refiner"):
        res["Refiner switch by sampling steps"] = True


def _restore_old_hires_fix(res: dict[str, object]) -> None:
    """Pre-1.0 hires fix wrote `First pass size`; convert to Size + Hires resize."""
    fw, fh = res.get("First pass size-1"), res.get("First pass size-2")
    if fw is None or fh is None:
        return
    fw, fh = int(fw), int(fh)  # type: ignore[arg-type]
    width, height = int(res.get("Size-1", 512)), int(res.get("Size-2", 512))  # type: ignore[arg-type]
    if fw == 0 or fh == 0:
        scale = math.sqrt(512 * 512 / (width * height))
        fw, fh = math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64
    res.update({"Size-1": fw, "Size-2": fh, "Hires resize-1": width, "Hires resize-2": height})


def parse_generation_parameters(text: str, skip_fields: list[str] | None = None) -> dict[str, object]:
    res: dict[str, object] = {}
    prompt, negative, done_with_prompt = "", "", False
    *lines, lastline = text.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:  # too few pairs: it is prompt text
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[len("Negative prompt:"):].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    for k, v in re_param.findall(lastline):
        if not v:
            continue  # A1111 drops empty values
        v = unquote(v) if v[0] == '"' and v[-1] == '"' else v
        m = re_imagesize.match(v)
        if m is not None:
            res[f"{k}-1"], res[f"{k}-2"] = m[1], m[2]  # strings, as A1111 returns them
        else:
            res[k] = v

    res["Prompt"], res["Negative prompt"] = prompt, negative
    if "Hypernet" in res:  # legacy field becomes a prompt tag
        res["Prompt"] = f"{res['Prompt']}<hypernet:{res['Hypernet']}:{res.get('Hypernet strength', '1.0')}>"
    for k, v in PARSE_DEFAULTS.items():
        res.setdefault(k, v)
    _restore_old_hires_fix(res)
    for k, v in PARSE_DEFAULTS_LATE.items():
        res.setdefault(k, v)
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False
    if "Emphasis" not in res and (_uses_emphasis(prompt) or _uses_emphasis(negative)):
        res["Emphasis"] = "Original"
    res.setdefault("Refiner switch by sampling steps", False)
    _backcompat(res)
    for key in skip_fields or ():
        res.pop(key, None)
    return res


# ---------------------------------------------------------------- API mapping

SCHEDULER_LABELS: dict[str, str] = {
    "Automatic": "automatic", "Uniform": "uniform", "Karras": "karras",
    "Exponential": "exponential", "Polyexponential": "polyexponential",
    "SGM Uniform": "sgm_uniform", "KL Optimal": "kl_optimal",
    "Align Your Steps": "align_your_steps", "Simple": "simple", "Normal": "normal",
    "DDIM": "ddim", "Beta": "beta", "Turbo": "turbo",
    "Align Your Steps GITS": "align_your_steps_GITS",
    "Align Your Steps 11": "align_your_steps_11", "Align Your Steps 32": "align_your_steps_32",
}

def _conv(kind: type, v: object) -> object:
    if kind is int:
        return int(float(v))  # type: ignore[arg-type]
    if kind is float:
        return float(v)  # type: ignore[arg-type]
    if kind is bool:
        return v if isinstance(v, bool) else str(v).strip().lower() in ("true", "1", "yes")
    return str(v)


def cast_option_value(default: object, v: object) -> object:
    """An infotext value as the type of an option's default (A1111 `Options.cast_value`: the type of
    the default; for a bool everything but "False" is true, so "Face restoration: CodeFormer" means
    True). Raises ValueError when the text is no such value."""
    if isinstance(default, bool):
        return v if isinstance(v, bool) else str(v).strip().lower() not in ("false", "0", "no", "off", "")
    if isinstance(default, int):
        return int(float(v))  # type: ignore[arg-type]
    if isinstance(default, float):
        return float(v)  # type: ignore[arg-type]
    return str(v)


def _loaded_checkpoint_has_hash(model_hash: str, current: Mapping[str, object]) -> bool:
    """The loaded checkpoint is the one an infotext's `Model hash` names (10-hex sha256 prefix, or
    the hash shown in the loaded title "name [hash]")."""
    h = model_hash.strip().lower()
    sha = str(current.get("sd_checkpoint_hash") or "").lower()
    title = str(current.get("sd_model_checkpoint") or "").lower()
    return bool(h) and (sha.startswith(h) or title.endswith(f"[{h}]"))


def _parse_default_equals_option_default(label: str, raw: object, value: object, default: object) -> bool:
    """A value the parser puts in for a missing key (PARSE_DEFAULTS) that is also the option's default."""
    for table in (PARSE_DEFAULTS, PARSE_DEFAULTS_LATE):
        if label in table and table[label] == raw:
            try:
                return value == cast_option_value(default, default)
            except (TypeError, ValueError):
                return False
    return False


def _split_old_sampler(sampler: str) -> tuple[str, str | None]:
    """Pre-1.9 infotexts glued the schedule to the sampler ("DPM++ 2M Karras")."""
    for label in ("Karras", "Exponential"):
        if sampler.endswith(" " + label):
            return sampler[: -len(label) - 1], SCHEDULER_LABELS[label]
    return sampler, None


def infotext_to_request(params: Mapping[str, object],
                        current_options: Mapping[str, object] | None = None,
                        options: Mapping[str, Any] | None = None) -> dict[str, object]:
    """Map parsed infotext to A1111 API txt2img/img2img request fields.

    Keys the API request has a field for fill that field. Every key that is an option's infotext
    name (`OptionInfo.infotext` in `options`, default `webui.settings.OPTIONS`) also goes to
    `override_settings`, as A1111's `get_override_settings` does: with `current_options` (the UI's
    paste) only when its value differs from the current one, and `Model hash` (as
    `sd_model_checkpoint: <hash>`) only when it does not name the loaded checkpoint
    (`sd_checkpoint_hash` / the title's hash); without `current_options` (a request's `infotext`,
    which cannot know the server's settings) all of them, since an override equal to the current
    value changes nothing. So "Sigma churn: 0.5" fills `s_churn` and overrides the `s_churn`
    option, whichever the sampler reads. Infotext keys of options this web UI does not have
    (e.g. "Pad conds v0") are left out: nothing could apply them.
    """
    p = params
    req: dict[str, object] = {}
    simple = [("Prompt", "prompt", str), ("Negative prompt", "negative_prompt", str),
              ("Steps", "steps", int), ("CFG scale", "cfg_scale", float),
              ("Image CFG scale", "image_cfg_scale", float), ("Seed", "seed", int),
              ("Variation seed", "subseed", int), ("Variation seed strength", "subseed_strength", float),
              ("Seed resize from-1", "seed_resize_from_w", int), ("Seed resize from-2", "seed_resize_from_h", int),
              ("Size-1", "width", int), ("Size-2", "height", int),
              ("Denoising strength", "denoising_strength", float), ("Batch size", "batch_size", int),
              ("Refiner", "refiner_checkpoint", str), ("Refiner switch at", "refiner_switch_at", float),
              # sampler knobs A1111 writes when they are not the sampler's defaults
              ("NGMS", "s_min_uncond", float), ("Eta", "eta", float), ("Eta DDIM", "eta", float),
              ("Sigma churn", "s_churn", float), ("Sigma tmin", "s_tmin", float),
              ("Sigma tmax", "s_tmax", float), ("Sigma noise", "s_noise", float)]
    for key, field, kind in simple:
        if key in p and p[key] is not None:
            try:
                req[field] = _conv(kind, p[key])
            except (TypeError, ValueError):
                continue  # a value that is no number is left out, not a failed paste
    if isinstance(p.get("Styles array"), list):  # styles found in the prompt on paste (infotext_styles)
        req["styles"] = list(p["Styles array"])
    if "Face restoration" in p:
        req["restore_faces"] = True
    if "Tiling" in p:
        req["tiling"] = _conv(bool, p["Tiling"])

    sched = str(p.get("Schedule type", "Automatic"))
    if "Sampler" in p:
        sampler, glued = _split_old_sampler(str(p["Sampler"]))
        req["sampler_name"] = sampler
        if glued and sched == "Automatic":
            sched = glued
    req["scheduler"] = SCHEDULER_LABELS.get(sched, sched.lower().replace(" ", "_"))

    hires = any(k.startswith("Hires ") and (k not in PARSE_DEFAULTS or p[k] != PARSE_DEFAULTS[k]) for k in p)
    req["enable_hr"] = hires
    if hires:
        for key, field, kind in [("Hires upscale", "hr_scale", float), ("Hires upscaler", "hr_upscaler", str),
                                 ("Hires steps", "hr_second_pass_steps", int),
                                 ("Hires resize-1", "hr_resize_x", int), ("Hires resize-2", "hr_resize_y", int),
                                 ("Hires prompt", "hr_prompt", str),
                                 ("Hires negative prompt", "hr_negative_prompt", str)]:
            if key in p:
                req[field] = _conv(kind, p[key])
        for key, field, same in [("Hires sampler", "hr_sampler_name", "Use same sampler"),
                                 ("Hires schedule type", "hr_scheduler", "Use same scheduler"),
                                 ("Hires checkpoint", "hr_checkpoint_name", "Use same checkpoint")]:
            if key in p and p[key] != same:
                v = str(p[key])
                req[field] = SCHEDULER_LABELS.get(v, v) if field == "hr_scheduler" else v

    # img2img / inpaint fields (the parser fills A1111's defaults for the missing ones)
    if "Mask blur" in p:
        req["mask_blur"] = _conv(int, p["Mask blur"])
    if "Mask mode" in p:
        req["inpainting_mask_invert"] = 1 if p["Mask mode"] == "Inpaint not masked" else 0
    if "Masked content" in p:
        fills = ("fill", "original", "latent noise", "latent nothing")
        req["inpainting_fill"] = fills.index(str(p["Masked content"])) if p["Masked content"] in fills else 1
    if "Inpaint area" in p:
        req["inpaint_full_res"] = p["Inpaint area"] == "Only masked"
    if "Masked area padding" in p:
        req["inpaint_full_res_padding"] = _conv(int, p["Masked area padding"])

    if options is None:
        from webui.settings import OPTIONS as options
    overrides: dict[str, object] = {}
    for key, info in options.items():
        label = getattr(info, "infotext", None)
        if not label or label not in p or p[label] is None:
            continue
        if key == "sd_model_checkpoint":
            if current_options is not None and current_options.get("disable_weights_auto_swap"):
                continue  # A1111's option (on by default): a pasted infotext does not switch the model
            model_hash = str(p[label]).strip()
            if model_hash and not (current_options is not None
                                   and _loaded_checkpoint_has_hash(model_hash, current_options)):
                overrides[key] = model_hash
            continue
        try:
            value = cast_option_value(info.default, p[label])
        except (TypeError, ValueError):
            continue
        if current_options is None and _parse_default_equals_option_default(label, p[label], value, info.default):
            continue  # filled in by the parser, not written by the generation: nothing to override
        if current_options is None or value != current_options.get(key, info.default):
            overrides[key] = value
    if overrides:
        req["override_settings"] = overrides
    return req


# ---------------------------------------------------------------- images

EXIF_IFD = 0x8769
USER_COMMENT = 0x9286
_IGNORED_INFO_KEYS = {
    "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background",
    "timestamp", "duration", "progressive", "progression", "icc_profile", "chromaticity", "photoshop",
}


def encode_user_comment(text: str) -> bytes:
    """EXIF UserComment as piexif writes it (A1111 reads it with utf-16-be)."""
    return b"UNICODE\0" + text.encode("utf-16-be")


def decode_user_comment(raw: bytes | str) -> str:
    """Decode an EXIF UserComment: 8-byte charset prefix, then the text."""
    if isinstance(raw, str):
        return raw
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16", errors="ignore")
        # no BOM: pick the byte order whose high bytes are zero (ASCII-heavy text)
        le = body[1::2].count(0) > body[0::2].count(0)
        return body.decode("utf-16-le" if le else "utf-16-be", errors="ignore")
    if prefix == b"JIS\0\0\0\0\0":
        return body.decode("shift_jis", errors="ignore")
    if prefix in (b"ASCII\0\0\0", b"\0" * 8):
        return body.decode("utf-8", errors="ignore").rstrip("\0")
    return raw.decode("utf-8", errors="ignore").rstrip("\0")


def make_exif(text: str) -> bytes:
    """Serialized EXIF block carrying `text` as UserComment (for JPEG/WebP saving)."""
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = encode_user_comment(text)
    return exif.tobytes()


_NAI_SAMPLERS = {"k_euler_ancestral": "Euler a", "k_euler": "Euler", "k_lms": "LMS",
                 "ddim": "DDIM", "plms": "PLMS", "k_dpmpp_2m": "DPM++ 2M",
                 "k_dpmpp_2s_ancestral": "DPM++ 2S a", "k_dpmpp_sde": "DPM++ SDE"}


def read_info_from_image(img: Image.Image) -> tuple[str | None, dict[str, object]]:
    """(infotext or None, other metadata items) — PNG text, EXIF UserComment, GIF comment."""
    items: dict[str, object] = {k: (str(v) if isinstance(v, str) else v) for k, v in (img.info or {}).items()}
    geninfo = items.pop("parameters", None)
    if geninfo is None and "exif" in items:
        try:
            raw = img.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
        except Exception:  # malformed EXIF must not break PNG-info display
            raw = None
        if raw:
            geninfo = decode_user_comment(raw) or None
    elif geninfo is None and "comment" in items:  # GIF
        c = items["comment"]
        geninfo = c.decode("utf8", errors="ignore") if isinstance(c, bytes) else str(c)
    for key in _IGNORED_INFO_KEYS:
        items.pop(key, None)
    if items.get("Software") == "NovelAI":
        try:
            j = json.loads(str(items["Comment"]))
            sampler = _NAI_SAMPLERS.get(j.get("sampler", ""), "Euler a")
            geninfo = (f"{items.get('Description', '')}\nNegative prompt: {j['uc']}\n"
                       f"Steps: {j['steps']}, Sampler: {sampler}, CFG scale: {j['scale']}, "
                       f"Seed: {j['seed']}, Size: {img.width}x{img.height}, Clip skip: 2, ENSD: 31337")
        except (KeyError, ValueError):
            pass
    return (str(geninfo) if geninfo is not None else None), items
