"""The built-in output browser (what A1111 users get from the "Image Browser" extensions): the output
folders by kind and date subfolder, newest first, in pages of thumbnails, search over the infotexts,
and delete to a trash folder inside the data dir.

Files are named to the outside as `<kind>/<path under that kind's folder>` (e.g.
`txt2img/2024-07-27/00012-3528893142.png`) and every such name from a browser or an API client is
checked: the resolved file must lie inside its kind's folder (no `..`, no symlink escape).
Listing stats files with `os.scandir` only; pictures are decoded only to make thumbnails.
"""
from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from webui.services.output_index import FileStat, InfotextIndex, ThumbnailCache

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".avif", ".gif")
PER_PAGE = 36
ALL = "all"
# kind → (label, option naming its folder, default folder under outputs/)
KINDS: dict[str, tuple[str, str, str]] = {
    "txt2img": ("txt2img", "outdir_txt2img_samples", "txt2img-images"),
    "img2img": ("img2img", "outdir_img2img_samples", "img2img-images"),
    "extras": ("Extras", "outdir_extras_samples", "extras-images"),
    "txt2img-grids": ("txt2img grids", "outdir_txt2img_grids", "txt2img-grids"),
    "img2img-grids": ("img2img grids", "outdir_img2img_grids", "img2img-grids"),
    "saved": ("Saved (💾)", "outdir_save", ""),
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


class OutputBrowserError(ValueError):
    """Bad input from the browser or an API client (HTTP 400)."""


class OutputNotFound(OutputBrowserError):
    """A well-formed name of a file that is not there (HTTP 404)."""


@dataclass(frozen=True)
class OutputFile:
    kind: str
    rel: str  # under the kind's folder, '/'-separated
    stat: FileStat

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.rel}"

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1]

    @property
    def path(self) -> Path:
        return Path(self.stat.path)


@dataclass
class OutputPage:
    kind: str
    folder: str
    search: str
    page: int
    pages: int
    total: int
    files: list[OutputFile]


class OutputBrowser:
    """Stateless between calls: everything it keeps (infotext index, thumbnails) is on disk, so a
    new instance per request is cheap."""

    def __init__(self, data_dir: Path, outputs_dir: Path, options: Mapping[str, Any], per_page: int = PER_PAGE) -> None:
        self.data_dir = Path(data_dir)
        self.outputs_dir = Path(outputs_dir)
        self.options = options
        self.per_page = per_page
        self.trash_dir = self.data_dir / "trash"
        cache = self.data_dir / "cache" / "output-browser"
        self.thumbs = ThumbnailCache(cache / "thumbnails")
        self._index_path = cache / "infotexts.sqlite"
        self._index: InfotextIndex | None = None
        # never list our own folders, even when an output folder is set to the data dir itself
        self._skip = {str(self.trash_dir.resolve()), str(cache.resolve())}

    @classmethod
    def for_services(cls, svc: Any) -> "OutputBrowser":
        return cls(svc.paths.data_dir, svc.paths.outputs_dir, svc.options())

    @property
    def index(self) -> InfotextIndex:
        if self._index is None:
            self._index = InfotextIndex(self._index_path)
        return self._index

    # ------------------------------------------------------------ folders
    def root(self, kind: str) -> Path:
        """The folder of one kind, as the savers pick it (`outdir_*` options, else the defaults;
        the 💾 folder is relative to the data dir)."""
        if kind not in KINDS:
            raise OutputBrowserError(f"unknown kind {kind!r}; one of: {', '.join([*KINDS, ALL])}")
        _, option, default = KINDS[kind]
        custom = str(self.options.get(option) or "").strip()
        if kind == "saved":
            d = Path(custom or "log/images")
            return d if d.is_absolute() else self.data_dir / d
        return Path(custom) if custom else self.outputs_dir / default

    def _kinds(self, kind: str) -> list[str]:
        if kind == ALL:
            return list(KINDS)
        self.root(kind)  # validates
        return [kind]

    def folders(self, kind: str) -> list[str]:
        """A kind's subfolders: date folders newest first, then any others by name ("" = all)."""
        if kind == ALL:
            return []
        try:
            with os.scandir(self.root(kind)) as it:
                names = [e.name for e in it if e.is_dir() and not e.name.startswith(".") and e.name.isprintable()
                         and e.name.encode("utf-8", "replace").decode("utf-8") == e.name
                         and os.path.realpath(e.path) not in self._skip]
        except (FileNotFoundError, NotADirectoryError):
            return []
        dated = sorted((n for n in names if _DATE.match(n)), reverse=True)
        return dated + sorted(n for n in names if not _DATE.match(n))

    def _scan(self, kind: str, directory: Path, prefix: str, recursive: bool, out: list[OutputFile]) -> None:
        try:
            it = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        with it:
            for e in it:
                if e.name.startswith("."):  # the savers' temp files, hidden files
                    continue
                try:
                    if e.is_dir():
                        if recursive and os.path.realpath(e.path) not in self._skip:
                            self._scan(kind, Path(e.path), f"{prefix}{e.name}/", True, out)
                    elif e.name.lower().endswith(IMAGE_EXTENSIONS):
                        (prefix + e.name).encode("utf-8")  # a name not in UTF-8 could not be named back to us
                        st = e.stat()
                        out.append(OutputFile(kind, prefix + e.name, FileStat(e.path, st.st_mtime_ns, st.st_size)))
                except (OSError, UnicodeEncodeError):  # vanished while listing, or not nameable
                    continue

    def scan(self, kind: str, folder: str = "") -> list[OutputFile]:
        """Every image of a kind (or of one of its subfolders), newest first."""
        files: list[OutputFile] = []
        seen: set[str] = set()
        for k in self._kinds(kind):
            root = self.root(k)
            if folder and kind != ALL:
                sub = self._inside(root, folder, want_dir=True)
                self._scan(k, sub, folder.strip("/") + "/", False, files)
            else:
                found: list[OutputFile] = []
                self._scan(k, root, "", True, found)
                for f in found:  # two kinds sharing a folder list its files once
                    if f.stat.path not in seen:
                        seen.add(f.stat.path)
                        files.append(f)
        files.sort(key=lambda f: (f.stat.mtime_ns, f.rel), reverse=True)
        return files

    # ------------------------------------------------------------ pages and search
    def page(self, kind: str, folder: str = "", page: int = 1, search: str = "") -> OutputPage:
        """One page (1-based) of a kind / folder, optionally only files whose infotext contains
        `search` (case-insensitive). A page past the last one is empty."""
        if page < 1:
            raise OutputBrowserError(f"page must be 1 or more, got {page}")
        files = self.scan(kind, folder)
        search = (search or "").strip()
        if search:
            if kind == ALL and not folder:  # every folder was scanned: forget files now gone
                roots = [str(self.root(k)).rstrip(os.sep) + os.sep for k in KINDS]
                self.index.prune(roots, {f.stat.path for f in files})
                self.thumbs.prune(f.stat for f in files)
            files = self.search_in(files, search)
        pages = max(1, math.ceil(len(files) / self.per_page))
        start = (page - 1) * self.per_page
        return OutputPage(kind, folder, search, page, pages, len(files), files[start:start + self.per_page])

    def search_in(self, files: list[OutputFile], needle: str) -> list[OutputFile]:
        texts = self.index.lookup(f.stat for f in files)
        n = needle.casefold()
        return [f for f in files if n in texts.get(f.stat.path, "").casefold()]

    def infotexts(self, files: list[OutputFile]) -> dict[str, str]:
        """id → infotext for these files (from the index; read once per file version)."""
        texts = self.index.lookup(f.stat for f in files)
        return {f.id: texts.get(f.stat.path, "") for f in files}

    def thumbnails(self, files: list[OutputFile]) -> list[Path | None]:
        return self.thumbs.ensure([f.stat for f in files])

    # ------------------------------------------------------------ one file
    @staticmethod
    def _inside(root: Path, rel: str, want_dir: bool = False) -> Path:
        """`root/rel` resolved, refusing anything that leaves `root` (.., absolute, symlinks)."""
        rel = str(rel or "").replace("\\", "/")
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if not parts or rel.startswith("/") or "\0" in rel or any(p == ".." for p in parts):
            raise OutputBrowserError(f"not a path inside the output folder: {rel!r}")
        try:
            real_root = root.resolve(strict=True)
        except (FileNotFoundError, OSError):
            raise OutputNotFound(f"no such {'folder' if want_dir else 'file'}: {rel}") from None
        what = "folder" if want_dir else "file"
        try:
            target = (root / "/".join(parts)).resolve()
            if not target.is_relative_to(real_root):
                raise OutputBrowserError(f"refused: {rel!r} leads outside the output folder")
            found = target.is_dir() if want_dir else target.is_file()
        except OSError as e:  # a name too long for the file system, a loop of links
            raise OutputNotFound(f"no such {what}: {rel[:200]} ({e.strerror or e})") from None
        if not found:
            raise OutputNotFound(f"no such {what}: {rel[:200]}")
        return target

    def resolve(self, file_id: str) -> OutputFile:
        """A `<kind>/<path>` name from outside → the checked file."""
        kind, sep, rel = str(file_id or "").replace("\\", "/").partition("/")
        if not sep or kind not in KINDS:
            raise OutputBrowserError(f"a file is named <kind>/<path>, kind one of {', '.join(KINDS)}; got {file_id!r}")
        path = self._inside(self.root(kind), rel)
        if not path.name.lower().endswith(IMAGE_EXTENSIONS):
            raise OutputBrowserError(f"not an image file: {rel!r}")
        st = path.stat()
        rel = "/".join(p for p in rel.replace("\\", "/").split("/") if p not in ("", "."))
        return OutputFile(kind, rel, FileStat(str(self.root(kind) / rel), st.st_mtime_ns, st.st_size))

    def thumbnail(self, file_id: str) -> Path:
        f = self.resolve(file_id)
        thumb = self.thumbs.ensure_one(f.stat)
        if thumb is None:
            raise OutputBrowserError(f"cannot read the image {f.id!r}")
        return thumb

    def details(self, file_id: str) -> dict[str, Any]:
        """Name, size, time and infotext of one file."""
        f = self.resolve(file_id)
        return {"path": f.id, "name": f.name, "size": f.stat.size, "mtime": f.stat.mtime_ns / 1e9,
                "infotext": self.infotexts([f])[f.id]}

    def trash(self, file_id: str) -> Path:
        """Move the file and its `.txt` sidecar to `<data dir>/trash/<kind>/<path>` (a free name
        there); returns the new path."""
        f = self.resolve(file_id)
        src = Path(f.stat.path)  # a symlink inside the folder moves as the link, not its target
        dest_dir = self.trash_dir / f.kind / Path(f.rel).parent
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = _free_name(dest_dir, src.name, lambda p: p.exists() or p.with_suffix(".txt").exists())
        shutil.move(str(src), str(dest))
        sidecar = src.with_suffix(".txt")
        if sidecar.is_file():
            shutil.move(str(sidecar), str(dest.with_suffix(".txt")))
        self.thumbs.drop(f.stat)
        self.index.forget([f.stat.path])
        return dest

def _free_name(folder: Path, name: str, taken: Callable[[Path], bool]) -> Path:
    stem, ext = os.path.splitext(name)
    candidate = folder / name
    i = 1
    while taken(candidate):
        candidate = folder / f"{stem}-{i}{ext}"
        i += 1
    return candidate


def first_line(text: str) -> str:
    return text.split("\n", 1)[0] if text else ""


def page_json(browser: OutputBrowser, page: OutputPage) -> dict[str, Any]:
    """The API's listing: names, sizes, times and the infotext's first line (the prompt)."""
    texts = browser.infotexts(page.files)
    return {
        "kind": page.kind, "folder": page.folder, "search": page.search, "page": page.page,
        "pages": page.pages, "total": page.total, "per_page": browser.per_page,
        "folders": browser.folders(page.kind),
        "items": [{"path": f.id, "name": f.name, "kind": f.kind, "size": f.stat.size,
                   "mtime": f.stat.mtime_ns / 1e9, "infotext_first_line": first_line(texts[f.id])}
                  for f in page.files],
    }
