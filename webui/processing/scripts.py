"""Scripts: code that runs inside a generation at A1111's hook points.

A `Script` is A1111's class: `title()`, `show(is_img2img)` (False / True = selectable in the Script
dropdown / `AlwaysVisible` = runs every job), its arguments (`args`: what `/script-info` lists and
what the UI builds controls from), and optional hooks, called in A1111's order by the pipeline:

    setup → before_process → process → per batch: before_process_batch → (networks activated)
    → after_extra_networks_activate → process_batch → process_before_every_sampling
    → per step: on_cfg_denoiser / on_cfg_denoised / on_cfg_after_cfg → post_sample
    → postprocess_batch → postprocess_batch_list → per image: postprocess_image
    → (save: before_image_saved / image_saved) → grid → postprocess

`before_hr` runs before the hires pass (and `process_before_every_sampling` again). A selectable
script may implement `run(p, *args)` and call `process_images(p)` itself, any number of times.

A hook that raises is logged with the script's title and traceback, named in the job's warnings,
and that script is left out for the rest of the job; the job goes on.
"""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from webui.processing.errors import GenerationError

if TYPE_CHECKING:
    from PIL import Image

    from webui.processing.context import Processed, Processing

log = logging.getLogger(__name__)


class _AlwaysVisible:
    def __repr__(self) -> str:
        return "AlwaysVisible"


AlwaysVisible = _AlwaysVisible()  # show() returns this for a script that runs every job


@dataclass
class ArgInfo:
    """One positional argument of a script (A1111's `/script-info` entry)."""
    label: str
    value: Any = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: list[Any] | None = None
    kind: str = ""  # "checkbox" | "slider" | "number" | "dropdown" | "multiselect" | "radio" | "textbox"
                    # | "file" | "info" (a note, no value); "" = guessed from value/choices
    note: str = ""  # the text an "info" argument shows in the UI

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "value": self.value}
        for k in ("minimum", "maximum", "step", "choices"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out


@dataclass
class PostprocessImageArgs:
    image: "Image.Image"


@dataclass
class PostprocessBatchListArgs:
    images: list[Any]


@dataclass
class PostSampleArgs:
    samples: Any


class Script:
    """Base class for built-in and extension scripts (A1111's `scripts.Script`)."""

    args: list[ArgInfo] = []
    # set by the runner (A1111 names): where this script's values sit in p.script_args
    args_from: int = 0
    args_to: int = 0
    is_txt2img = False
    is_img2img = False
    alwayson = False
    filename: str = ""
    name: str | None = None  # the lower-case title (A1111's script.name)

    def title(self) -> str:
        raise NotImplementedError

    def show(self, is_img2img: bool) -> Any:
        return True

    def arg_infos(self, is_img2img: bool) -> list[ArgInfo]:
        """The arguments for this tab (a script may differ between txt2img and img2img)."""
        return list(self.args)

    def run(self, p: "Processing", *args: Any) -> "Processed | None":
        return None


@dataclass
class _Bound:
    script: Script
    args: list[Any]
    failed: bool = False


class ScriptRunner:
    """The scripts of one tab (txt2img or img2img), in their run order."""

    def __init__(self, is_img2img: bool, scripts: Iterable[Script] = ()) -> None:
        self.is_img2img = is_img2img
        self.scripts: list[Script] = []
        self.selectable: list[Script] = []
        self.alwayson: list[Script] = []
        for s in scripts:
            self.add(s)

    def add(self, script: Script) -> None:
        shown = script.show(self.is_img2img)
        if shown is False:
            return
        script.is_img2img = self.is_img2img
        script.is_txt2img = not self.is_img2img
        script.alwayson = shown is AlwaysVisible
        script.name = script.title().lower()
        # A1111's flat script_args: [selected index, args of every script in order]
        script.args_from = 1 + sum(len(s.arg_infos(self.is_img2img)) for s in self.scripts)
        script.args_to = script.args_from + len(script.arg_infos(self.is_img2img))
        self.scripts.append(script)
        (self.alwayson if script.alwayson else self.selectable).append(script)

    def remove_where(self, predicate: Callable[[Script], bool]) -> int:
        """Drop the scripts `predicate` selects (unloaded extensions'); the others keep their order
        and get their `script_args` positions again. Returns how many went."""
        kept = [s for s in self.scripts if not predicate(s)]
        gone = len(self.scripts) - len(kept)
        self.scripts, self.selectable, self.alwayson = [], [], []
        for s in kept:
            self.add(s)
        return gone

    def titles(self) -> list[str]:
        return [s.title() for s in self.selectable]

    def find_selectable(self, name: str | None) -> Script | None:
        """A1111 matches `script_name` against titles case-insensitively; None/"None" = no script."""
        if not name or str(name).strip().lower() == "none":
            return None
        key = str(name).strip().lower()
        for s in self.selectable:
            if s.title().lower() == key:
                return s
        raise GenerationError(f"script {name!r} not found; {'img2img' if self.is_img2img else 'txt2img'} has "
                              f"{self.titles()}")

    def find_alwayson(self, name: str) -> Script | None:
        key = str(name).strip().lower()
        return next((s for s in self.alwayson if s.title().lower() == key), None)

    def check_request(self, script_name: str | None, alwayson_scripts: dict[str, Any] | None) -> None:
        """Unknown scripts fail before the job is queued (API: 422 naming them)."""
        self.find_selectable(script_name)
        for name, val in (alwayson_scripts or {}).items():
            if self.find_alwayson(name) is None and isinstance(val, dict) and val.get("args"):
                raise GenerationError(f"always on script {name!r} not found; this tab has "
                                      f"{[s.title() for s in self.alwayson]}")

    def bind(self, p: "Processing") -> "JobScripts":
        """This job's scripts with their arguments: always-on ones from `p.alwayson_scripts`
        ({title: {"args": [...]}}; missing args take the script's defaults), the selected one from
        `p.script_name` / `p.script_args`. Fills `p.script_args` in A1111's flat layout."""
        given = {str(k).strip().lower(): v for k, v in (p.alwayson_scripts or {}).items()}
        selected = self.find_selectable(getattr(p, "script_name", None))
        flat: list[Any] = [0 if selected is None else self.selectable.index(selected) + 1]
        bound: list[_Bound] = []
        chosen: _Bound | None = None
        for s in self.scripts:
            defaults = [a.value for a in s.arg_infos(self.is_img2img)]
            if s.alwayson:
                entry = given.get(s.title().lower())
                args = list(entry.get("args") or []) if isinstance(entry, dict) else []
            elif s is selected:
                args = list(p.script_args or [])
            else:
                args = []
            # a value left out (or sent as null) takes the script's default
            merged = [d if i < len(args) and args[i] is None else (args[i] if i < len(args) else d)
                      for i, d in enumerate(defaults)] + args[len(defaults):]
            flat.extend(merged[:len(defaults)] if len(merged) >= len(defaults) else merged)
            b = _Bound(s, merged)
            if s.alwayson:
                bound.append(b)
            elif s is selected:
                chosen = b
        p.script_args = flat
        return JobScripts(bound, chosen)


class JobScripts:
    """One job's scripts bound to their arguments; the pipeline calls the hooks through this."""

    def __init__(self, alwayson: list[_Bound], selected: _Bound | None) -> None:
        self.alwayson = alwayson
        self.selected = selected

    @property
    def scripts(self) -> list[Script]:
        return [b.script for b in self.alwayson]

    def _each(self, p: "Processing", hook: str, *args: Any, **kwargs: Any) -> None:
        for b in self.alwayson:  # A1111: hooks run for the always-on scripts; a selected one has run()
            fn = getattr(b.script, hook, None)
            if fn is None or b.failed:
                continue
            self.call(p, b, hook, fn, *args, **kwargs)

    def call(self, p: "Processing", b: _Bound, hook: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(p, *args, *b.args, **kwargs)
        except GenerationError:
            raise  # the user's input was wrong: the job fails with the message (API 4xx)
        except Exception as e:  # noqa: BLE001 - a broken script must not stop the job
            from webui.services.jobs import Interrupted, Skipped
            if isinstance(e, (Interrupted, Skipped)):
                raise
            b.failed = True
            title = b.script.title()
            log.error("script %r failed in %s:\n%s", title, hook, traceback.format_exc())
            p.warn(f"Script '{title}' failed in {hook}: {type(e).__name__}: {e}; the job went on without it")
            return None

    # ---- A1111 hooks, in the order the pipeline calls them ----
    def setup(self, p: "Processing") -> None:
        self._each(p, "setup")

    def before_process(self, p: "Processing") -> None:
        self._each(p, "before_process")

    def process(self, p: "Processing") -> None:
        self._each(p, "process")

    def before_process_batch(self, p: "Processing", **kw: Any) -> None:
        self._each(p, "before_process_batch", **kw)

    def after_extra_networks_activate(self, p: "Processing", **kw: Any) -> None:
        self._each(p, "after_extra_networks_activate", **kw)

    def process_batch(self, p: "Processing", **kw: Any) -> None:
        self._each(p, "process_batch", **kw)

    def process_before_every_sampling(self, p: "Processing", **kw: Any) -> None:
        self._each(p, "process_before_every_sampling", **kw)

    def post_sample(self, p: "Processing", ps: PostSampleArgs) -> None:
        self._each_positional(p, "post_sample", ps)

    def postprocess_batch(self, p: "Processing", images: Any, **kw: Any) -> None:
        self._each(p, "postprocess_batch", images=images, **kw)

    def postprocess_batch_list(self, p: "Processing", pp: PostprocessBatchListArgs, **kw: Any) -> None:
        for b in self._live("postprocess_batch_list"):
            self.call(p, b, "postprocess_batch_list", lambda p_, *a, **k: b.script.postprocess_batch_list(
                p_, pp, *a, **k), **kw)

    def postprocess_image(self, p: "Processing", pp: PostprocessImageArgs) -> None:
        self._each_positional(p, "postprocess_image", pp)

    def before_hr(self, p: "Processing") -> None:
        self._each(p, "before_hr")

    def postprocess(self, p: "Processing", processed: "Processed") -> None:
        self._each_positional(p, "postprocess", processed)

    def _live(self, hook: str) -> list[_Bound]:
        return [b for b in self.alwayson if not b.failed and getattr(b.script, hook, None) is not None]

    def _each_positional(self, p: "Processing", hook: str, obj: Any) -> None:
        """Hooks whose second argument comes before the script's own (A1111: `postprocess(p, processed, *args)`)."""
        for b in self._live(hook):
            fn = getattr(b.script, hook)
            self.call(p, b, hook, lambda p_, *a, _fn=fn: _fn(p_, obj, *a))

    # ---- per-step hooks (A1111's on_cfg_denoiser / on_cfg_denoised / on_cfg_after_cfg) ----
    def step_hooks(self, p: "Processing", kind: str) -> list[Callable[[Any], None]]:
        """Callables for the denoiser: each takes the step's params object (see `callbacks`)."""
        out = []
        for b in self._live(kind):
            fn = getattr(b.script, kind)
            out.append(lambda params, _b=b, _fn=fn: self.call(p, _b, kind, lambda p_, *a: _fn(p_, params, *a)))
        return out

    # ---- the selected script ----
    def run(self, p: "Processing") -> "Processed | None":
        """The selected script's `run(p, *args)`; None when no script is selected (or it returned None)."""
        if self.selected is None:
            return None
        b = self.selected
        try:
            return b.script.run(p, *b.args)
        except GenerationError:
            raise
        except Exception as e:  # noqa: BLE001
            from webui.services.jobs import Interrupted, Skipped
            if isinstance(e, (Interrupted, Skipped)):
                raise
            log.error("script %r failed in run:\n%s", b.script.title(), traceback.format_exc())
            raise GenerationError(f"Script '{b.script.title()}' failed: {type(e).__name__}: {e}") from None


@dataclass
class ScriptCatalog:
    """The txt2img and img2img runners of the app (built once from the built-in scripts and, later,
    the extensions')."""
    txt2img: ScriptRunner
    img2img: ScriptRunner
    extra: dict[str, Any] = field(default_factory=dict)

    def runner(self, is_img2img: bool) -> ScriptRunner:
        return self.img2img if is_img2img else self.txt2img

    def script_info(self) -> list[dict[str, Any]]:
        """`GET /sdapi/v1/script-info` in A1111's shape."""
        out = []
        for runner in (self.txt2img, self.img2img):
            for s in runner.scripts:
                out.append({"name": s.title().lower(), "is_alwayson": s.alwayson, "is_img2img": runner.is_img2img,
                            "args": [a.describe() for a in s.arg_infos(runner.is_img2img)]})
        return out
