"""A1111's file-name and folder patterns: `[seed]-[prompt_words]`, `[date]`, `[datetime<%H%M><UTC>]` ...

`apply_pattern` fills the tags a `NameContext` knows (A1111's `FilenameGenerator` list); a tag it does
not know, or one without a value here (e.g. `[user]` without accounts), stays in the name as written,
as A1111 keeps it. Some tags stand for nothing in some jobs (`[batch_number]` in a batch of one): they
drop the text written just before them too, so "-[batch_number]" leaves no stray dash.

Every value is sanitised as A1111 does (Windows' invalid characters become "_", at most 128
characters, no leading spaces, no trailing dots or spaces); `folder_parts` and `file_stem` make the
whole name safe: no path separators in a file name, no "." / ".." folders, no Windows device names,
so a pattern or a prompt such as "../../x" can never leave the output folder.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import re
import string
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from PIL import Image

log = logging.getLogger(__name__)

INVALID_CHARS = '#<>:"/\\|?*\n\r\t'
MAX_PART_LENGTH = 128  # A1111's --filenames-max-length default
DEFAULT_TIME_FORMAT = "%Y%m%d%H%M%S"
DEFAULT_ZIP_PATTERN = "[datetime]_[[model_name]]_[seed]-[seed_last]"
# names Windows reserves for devices, with or without an extension
WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}

_TAG = re.compile(r"\[([^\[\]]+)\]")
_TRAILING_ARG = re.compile(r"(.*)<([^>]*)>$")
_NON_LETTERS = re.compile(r"[\s" + re.escape(string.punctuation) + "]+")
# control characters cannot be in file names on any system (a NUL would even make open() fail)
_TRANSLATE = {**{ord(c): "_" for c in INVALID_CHARS}, **{i: "_" for i in range(32)}, 0x7F: "_"}
_TRANSLATE_LOOSE = {ord("/"): "_", ord("\\"): "_", **{i: "_" for i in range(32)}, 0x7F: "_"}


class _Skip:
    """A tag that stands for nothing here, and takes the text before it along."""


SKIP = _Skip()


def sanitize_part(text: Any, replace_spaces: bool = True) -> str:
    """One value made fit for a file name, by A1111's rules."""
    text = str(text)
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate(_TRANSLATE)
    return text.lstrip(" ")[:MAX_PART_LENGTH].rstrip(" .")


def _not_reserved(name: str) -> str:
    base = name.split(".", 1)[0].rstrip(" ").upper()
    return f"_{name}" if base in WINDOWS_RESERVED else name


@dataclass
class NameContext:
    """What a saved picture's name may tell: A1111's `p`, seed, prompt and image, flattened."""
    seed: Any = None
    prompt: str | None = None                # this picture's prompt (styles applied)
    negative_prompt: str | None = None       # this picture's negative prompt
    job_prompt: str | None = None            # the request's prompt and negative prompt ([full_prompt_hash])
    job_negative_prompt: str | None = None
    styles: Sequence[str] = ()
    style_prompts: Sequence[str] = ()        # the styles' prompt texts, for [prompt_no_styles]
    steps: Any = None
    cfg: Any = None
    sampler: str | None = None
    scheduler: str | None = None
    model_hash: str | None = None
    model_name: str | None = None
    vae_filename: str | None = None          # file name of the separate VAE in use, None: the model's own
    job_timestamp: str | None = None
    batch_index: int = 0
    batch_size: int = 1
    n_iter: int = 1
    iteration: int = 0
    all_seeds: Sequence[Any] = ()
    clip_skip: Any = None
    denoising: Any = None
    user: str | None = None
    image: Image.Image | None = None
    zip: bool = False                        # naming a zip of several pictures
    basename: str = ""
    max_prompt_words: int = 8                # option directories_max_prompt_words
    now: _dt.datetime | None = field(default=None, repr=False)  # the clock (tests fix it)

    def time(self) -> _dt.datetime:
        return self.now or _dt.datetime.now()


def _hash(text: str | None, args: Sequence[str], default_len: int | None = 8) -> str:
    n = int(args[0]) if args and args[0] != "" else default_len
    return hashlib.sha256((text or "").encode()).hexdigest()[:n]


def _datetime(c: NameContext, *args: str) -> str:
    fmt = args[0] if args and args[0] != "" else DEFAULT_TIME_FORMAT
    tz = None
    if len(args) > 1:
        try:
            tz = ZoneInfo(args[1])
        except (ZoneInfoNotFoundError, ValueError):
            tz = None  # an unknown zone: local time, as A1111
    when = c.time().astimezone(tz)
    try:
        text = when.strftime(fmt)
    except (ValueError, TypeError):
        text = when.strftime(DEFAULT_TIME_FORMAT)
    return sanitize_part(text, replace_spaces=False)


def _prompt_words(c: NameContext) -> str:
    words = [w for w in _NON_LETTERS.split(c.prompt or "") if w] or ["empty"]
    return sanitize_part(" ".join(words[:max(1, int(c.max_prompt_words))]), replace_spaces=False)


def _prompt_no_styles(c: NameContext) -> str | None:
    if c.prompt is None:
        return None
    text = c.prompt
    for style in c.style_prompts:
        if not style:
            continue
        for part in style.split("{prompt}"):  # a style that wraps the prompt: remove each piece
            text = text.replace(part, "").replace(", ,", ",").strip().strip(",")
        text = text.replace(style, "").strip().strip(",").strip()
    return sanitize_part(text, replace_spaces=False)


def _hasprompt(c: NameContext, *args: str) -> str | None:
    if c.prompt is None:
        return None
    lower = c.prompt.lower()
    out = ""
    for arg in args:
        if not arg:
            continue
        want, _, default = arg.partition("|")
        out += want.lower() if want.lower() in lower else default
    return sanitize_part(out)


def _sampler_scheduler(c: NameContext, with_sampler: bool) -> Any:
    if not c.sampler:
        return SKIP
    scheduler = (c.scheduler or "Automatic").capitalize()
    return sanitize_part(f"{c.sampler} {scheduler}" if with_sampler else scheduler, replace_spaces=False)


def _image_hash(c: NameContext, *args: str) -> str | None:
    if c.image is None:
        return None
    n = int(args[0]) if args and args[0] != "" else None
    return hashlib.sha256(c.image.tobytes()).hexdigest()[:n]


def _vae_filename(c: NameContext) -> str:
    if not c.vae_filename:
        return "NoneType"  # A1111's word for "no separate VAE file"
    parts = c.vae_filename.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "" else parts[0]


def _opt_text(v: Any, **kw: Any) -> str | None:
    return None if v is None else sanitize_part(v, **kw)


# A1111's tags (and [negative_prompt]); a function returning None leaves the tag as written
TAGS: dict[str, Callable[..., Any]] = {
    "basename": lambda c: c.basename or "img",
    "seed": lambda c: "" if c.seed is None else c.seed,
    "seed_first": lambda c: c.seed if c.batch_size == 1 or not c.all_seeds else c.all_seeds[0],
    "seed_last": lambda c: SKIP if c.batch_size == 1 or not c.all_seeds else c.all_seeds[-1],
    "steps": lambda c: c.steps,
    "cfg": lambda c: c.cfg,
    "width": lambda c: None if c.image is None else c.image.width,
    "height": lambda c: None if c.image is None else c.image.height,
    "styles": lambda c: sanitize_part(", ".join(s for s in c.styles if s != "None") or "None", replace_spaces=False),
    "sampler": lambda c: _opt_text(c.sampler, replace_spaces=False),
    "sampler_scheduler": lambda c: _sampler_scheduler(c, True),
    "scheduler": lambda c: _sampler_scheduler(c, False),
    "model_hash": lambda c: c.model_hash,
    "model_name": lambda c: _opt_text(c.model_name, replace_spaces=False),
    "date": lambda c: c.time().strftime("%Y-%m-%d"),
    "datetime": _datetime,
    "job_timestamp": lambda c: c.job_timestamp,
    "prompt_hash": lambda c, *a: _hash(c.prompt, a),
    "negative_prompt_hash": lambda c, *a: _hash(c.negative_prompt, a),
    "full_prompt_hash": lambda c, *a: _hash(f"{c.job_prompt or ''} {c.job_negative_prompt or ''}", a),
    "prompt": lambda c: _opt_text(c.prompt),
    "negative_prompt": lambda c: _opt_text(c.negative_prompt),
    "prompt_no_styles": _prompt_no_styles,
    "prompt_spaces": lambda c: _opt_text(c.prompt, replace_spaces=False),
    "prompt_words": _prompt_words,
    "batch_number": lambda c: SKIP if c.batch_size == 1 or c.zip else c.batch_index + 1,
    "batch_size": lambda c: c.batch_size,
    "generation_number": lambda c: (SKIP if (c.n_iter == 1 and c.batch_size == 1) or c.zip
                                    else c.iteration * c.batch_size + c.batch_index + 1),
    "hasprompt": _hasprompt,
    "clip_skip": lambda c: c.clip_skip,
    "denoising": lambda c: c.denoising if c.denoising else SKIP,
    "user": lambda c: c.user,
    "vae_filename": _vae_filename,
    "none": lambda c: "",  # the number alone
    "image_hash": _image_hash,
}


def _split_args(tag: str) -> tuple[str, list[str]]:
    """"datetime<%Y><UTC>" -> ("datetime", ["%Y", "UTC"])."""
    args: list[str] = []
    while (m := _TRAILING_ARG.match(tag)) is not None:
        tag, arg = m.groups()
        args.insert(0, arg)
    return tag, args


def apply_pattern(pattern: str, ctx: NameContext) -> str:
    """`pattern` with every tag `ctx` can fill replaced by its sanitised value."""
    out: list[str] = []
    pos = 0
    for m in _TAG.finditer(pattern):
        before, raw = pattern[pos:m.start()], m.group(1)
        pos = m.end()
        name, args = _split_args(raw)
        fn = TAGS.get(name.lower())
        value: Any = None
        if fn is not None:
            try:
                value = fn(ctx, *args)
            except Exception:  # a tag must never stop a save: keep it as written
                log.warning("could not put [%s] into a file name", raw, exc_info=True)
                value = None
        if value is SKIP:
            continue
        out.append(before + (f"[{raw}]" if value is None else str(value)))
    out.append(pattern[pos:])
    return "".join(out)


def folder_parts(name: str) -> list[str]:
    """A filled directory pattern as safe folder names: a literal "/" in the pattern makes nested
    folders (as in A1111); empty, "." and ".." parts are dropped, so the result stays inside the
    output folder."""
    parts = []
    for part in re.split(r"[\\/]+", name):
        part = sanitize_part(part, replace_spaces=False)
        while len(part.encode("utf-8")) > 200:  # 128 characters can be 512 bytes; names stop at 255
            part = part[:-1].rstrip(" .")
        if part and part.strip(".") and part not in (".", ".."):
            parts.append(_not_reserved(part))
    return parts


def file_stem(name: str, max_bytes: int = 250, *, strict: bool = True) -> str:
    """A filled file-name pattern as one safe file name (no separators), at most `max_bytes` UTF-8
    bytes (file systems count bytes; 255 is the usual limit, the extension needs the rest).
    `strict`: Windows' invalid characters too (else only separators and control characters, for
    names the user chose, such as an input file's)."""
    name = name.translate(_TRANSLATE if strict else _TRANSLATE_LOOSE).lstrip(" ")
    while len(name.encode("utf-8")) > max_bytes:
        name = name[:-1]
    name = name.rstrip(" .") if name.strip(" .") else name.replace(".", "_")
    return _not_reserved(name)


def file_decoration(pattern: str, save_to_dirs: bool, ctx: NameContext) -> str:
    """The part of a picture's name after its number: `samples_filename_pattern`, or A1111's default
    (`[seed]` when pictures go to dated folders, else `[seed]-[prompt_spaces]`)."""
    return apply_pattern(pattern or ("[seed]" if save_to_dirs else "[seed]-[prompt_spaces]"), ctx)


def directory_name(pattern: str, ctx: NameContext) -> list[str]:
    """The subfolders `directories_filename_pattern` gives (A1111: `[prompt_words]` when empty)."""
    return folder_parts(apply_pattern(pattern or "[prompt_words]", ctx).lstrip(" ").rstrip("\\ /"))


def zip_name(pattern: str, ctx: NameContext) -> str:
    """The 🗜️ archive's name without `.zip` (`grid_zip_filename_pattern`, A1111's default when empty)."""
    ctx.zip = True
    return file_stem(apply_pattern(pattern or DEFAULT_ZIP_PATTERN, ctx)) or "images"


def context_from_info(info: dict[str, Any], params: dict[str, Any], image: Image.Image | None,
                      index: int, max_prompt_words: int = 8) -> NameContext:
    """The context of a picture already shown: the job's generation info (A1111's `Processed.js()`
    fields) and the picture's parsed infotext (`params`), as A1111's Save button builds its `p`."""
    first = int(info.get("index_of_first_image", 0) or 0)
    seeds = [s for s in info.get("all_seeds") or [] if s is not None]
    k = min(max(index - first, 0), len(seeds) - 1) if seeds else 0
    batch_size = int(info.get("batch_size") or 1)
    return NameContext(
        seed=params.get("Seed", seeds[k] if seeds else info.get("seed")),
        prompt=str(params.get("Prompt", info.get("prompt") or "")),
        negative_prompt=str(params.get("Negative prompt", info.get("negative_prompt") or "")),
        job_prompt=str(info.get("prompt") or ""), job_negative_prompt=str(info.get("negative_prompt") or ""),
        styles=list(info.get("styles") or []), steps=params.get("Steps", info.get("steps")),
        cfg=params.get("CFG scale", info.get("cfg_scale")), sampler=params.get("Sampler", info.get("sampler_name")),
        scheduler=params.get("Schedule type"), model_hash=params.get("Model hash", info.get("sd_model_hash")),
        model_name=params.get("Model", info.get("sd_model_name")),
        vae_filename=info.get("sd_vae_name"), job_timestamp=info.get("job_timestamp"),
        batch_index=k % batch_size, batch_size=batch_size, iteration=k // batch_size,
        n_iter=max(1, -(-len(seeds) // batch_size)) if seeds else 1, all_seeds=seeds,
        clip_skip=params.get("Clip skip", info.get("clip_skip")), denoising=params.get("Denoising strength"),
        image=image, max_prompt_words=max_prompt_words)
