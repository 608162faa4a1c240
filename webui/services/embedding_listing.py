"""GET /sdapi/v1/embeddings in A1111's shape, also before any checkpoint has loaded.

With a model loaded the answer comes from its embedding database.  Before that (the startup load
takes seconds to minutes) the embedding files are judged against the checkpoint that is selected or
loading: its text-encoder widths are read from the file's header shapes, as the loader will, so the
list a client gets at once is the list it will get after the load.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from webui.models.registry import CheckpointInfo

log = logging.getLogger(__name__)

_cache_lock = threading.Lock()
_cache: dict[tuple, dict[str, Any]] = {}


def _entry(e: Any) -> dict[str, Any]:
    return {"step": e.step, "sd_checkpoint": None, "sd_checkpoint_name": None,
            "shape": int(e.per_encoder[-1].shape[1]), "vectors": e.vectors}


def _skipped(db: Any) -> dict[str, Any]:
    return {name: {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None,
                   "vectors": None, "reason": why} for name, why in db.skipped.items()}


def _selected_checkpoint(svc: Any) -> CheckpointInfo | None:
    """The checkpoint being loaded, else the one the settings (or --ckpt) select, else the default."""
    models = svc.models
    for name in (getattr(models, "loading", None), svc.settings.get("sd_model_checkpoint")):
        if name:
            try:
                info = models.resolve(str(name))
            except Exception:  # a stale name in config.json: the default is what will load
                continue
            if not info.error:
                return info
    return models.default_checkpoint()


def _widths(info: CheckpointInfo) -> list[int]:
    from webui.models.detect import detect_checkpoint
    from webui.models.file_io import read_key_shapes

    det = detect_checkpoint(*read_key_shapes(info.path))
    return [int(cfg["hidden_size"]) for cfg in det.text_encoder_configs]


def embeddings_listing(svc: Any) -> dict[str, Any]:
    from webui.networks.embeddings import EmbeddingDatabase

    cur = svc.models.current
    db = getattr(cur.encoder, "embeddings", None) if cur is not None else None
    if db is not None:
        db.refresh_if_changed()
        return {"loaded": {n: _entry(e) for n, e in db.loaded.items()}, "skipped": _skipped(db)}
    folder = getattr(svc.models, "embeddings_dir", None)
    info = _selected_checkpoint(svc)
    if info is None:
        return {"loaded": {}, "skipped": {}}
    try:
        widths = _widths(info)
    except Exception as e:  # an unreadable header: the load will fail too and say why
        log.warning("embeddings: cannot read %s: %s", info.path, e)
        return {"loaded": {}, "skipped": {}}
    db = EmbeddingDatabase(folder, [], widths)  # no tokenizers: only the files' fit is judged here
    key = (str(info.path), tuple(widths), db._folder_signature())
    with _cache_lock:
        if key not in _cache:
            db.load()
            _cache.clear()  # one entry: the folder or the selection changed
            _cache[key] = {"loaded": {n: _entry(e) for n, e in db.loaded.items()}, "skipped": _skipped(db)}
        return _cache[key]
