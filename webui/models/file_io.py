"""Safe reading of model files (.safetensors and plain-tensor PyTorch pickles).

Why so strict: model files come from the internet.  A safetensors header is untrusted JSON that we
validate fully before any tensor is touched, and pickles are only ever opened with
``torch.load(weights_only=True)`` so that a malicious ``__reduce__`` can never run.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import torch

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # same cap as the safetensors library

# Bits per element of every dtype the safetensors format defines.
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


class ModelFileError(Exception):
    """A model file is missing, corrupt, unsafe or not what it claims to be.

    ``str(err)`` is a message fit for the UI: ``"<file name>: <reason>"``.  ``transient``: the file
    could not be read this time (an I/O error, no permission) but nothing says it is broken.
    """

    def __init__(self, path: str | Path | None, reason: str, transient: bool = False):
        self.path = Path(path) if path is not None else None
        self.reason = reason
        self.transient = transient
        super().__init__(f"{self.path.name}: {reason}" if self.path is not None else reason)


class TensorInfo(NamedTuple):
    dtype: str
    shape: tuple[int, ...]
    offset: int = 0  # absolute file position of the tensor's first byte


def _torch_dtypes() -> dict[str, torch.dtype]:
    names = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64",
             "U16": "uint16", "U32": "uint32", "U64": "uint64", "F16": "float16", "BF16": "bfloat16",
             "F32": "float32", "F64": "float64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
    return {k: getattr(torch, v) for k, v in names.items() if hasattr(torch, v)}


def _read_safetensors(path: Path, infos: dict[str, TensorInfo], keep: tuple[str, ...] | None,
                      cast: Any) -> dict[str, torch.Tensor]:
    """Every kept tensor read straight from the file into memory it owns, in file order.

    Plain reads instead of a memory map: mapped file pages count towards the process's RSS while
    they are touched, so copying out of a mapping peaks at twice the file; here the peak is the
    tensors themselves (plus one tensor when ``cast`` converts).  The header was validated before,
    so every read stays inside the file.  (safetensors is little-endian, as every host we run on.)"""
    dtypes = _torch_dtypes()
    out: dict[str, torch.Tensor] = {}
    wanted = sorted(((info.offset, key, info) for key, info in infos.items() if keep is None or key.startswith(keep)))
    with path.open("rb", buffering=0) as f:
        for offset, key, info in wanted:
            if info.dtype not in dtypes:
                raise _fail(path, f"tensor {key!r} has dtype {info.dtype}, which this torch cannot hold")
            t = torch.empty(info.shape, dtype=dtypes[info.dtype])
            view = memoryview(t.reshape(-1).view(torch.uint8).numpy())
            f.seek(offset)
            done = 0
            while done < len(view):  # one read() returns at most ~2 GB
                got = f.readinto(view[done:])
                if not got:
                    raise _fail(path, f"file ended inside tensor {key!r} (it changed while being read)")
                done += got
            out[key] = cast(t)
    return out


def _fail(path: Path, reason: str, transient: bool = False) -> ModelFileError:
    return ModelFileError(path, reason, transient)


def read_safetensors_header(path: str | Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header without reading tensor data.

    Checks everything the safetensors format promises (so that a later load cannot read outside the
    file or misinterpret bytes): header length, JSON syntax, dtypes, shapes, offsets inside the data
    section, offsets matching dtype x shape, no overlaps or gaps.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except OSError as e:
        raise _fail(path, f"cannot read file ({e.strerror or e})", transient=True) from None
    if size == 0:
        raise _fail(path, "file is empty (0 bytes); the download or copy probably failed")
    if size < 8:
        raise _fail(path, f"file is only {size} bytes, too short to be a safetensors file")
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise _fail(path, f"safetensors header claims {n} bytes but the file has only {size - 8} after the "
                              "length field (truncated download, or not a safetensors file)")
        if n > MAX_HEADER_BYTES:
            raise _fail(path, f"safetensors header is implausibly large ({n} bytes)")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"safetensors header is not valid JSON ({e.__class__.__name__}); "
                          "the file is corrupt or not a safetensors file") from None
    if not isinstance(header, dict):
        raise _fail(path, "safetensors header is not a JSON object")

    metadata_raw = header.pop("__metadata__", None) or {}
    if not isinstance(metadata_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata_raw.items()
    ):
        raise _fail(path, "safetensors __metadata__ must map strings to strings")

    data_size = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise _fail(path, f"header entry for tensor {name!r} is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _DTYPE_BITS:
            raise _fail(path, f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise _fail(path, f"tensor {name!r} has an invalid shape {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise _fail(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise _fail(path, f"tensor {name!r} lies outside the file (bytes {begin}..{end} of a "
                              f"{data_size}-byte data section); the file is truncated or its header is corrupt")
        numel = 1
        for d in shape:
            numel *= d
        nbits = numel * _DTYPE_BITS[dtype]
        if nbits % 8 or end - begin != nbits // 8:
            raise _fail(path, f"tensor {name!r}: header says {dtype}{shape} ({nbits / 8:g} bytes) but its "
                              f"offsets span {end - begin} bytes; the header is corrupt")
        tensors[name] = TensorInfo(dtype, tuple(shape), 8 + n + begin)
        spans.append((begin, end, name))

    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin < pos:
            raise _fail(path, f"tensor {name!r} overlaps another tensor in the file; the header is corrupt")
        if begin > pos:
            raise _fail(path, f"unused gap of {begin - pos} bytes before tensor {name!r}; the header is corrupt")
        pos = end
    if pos != data_size:
        raise _fail(path, f"{data_size - pos} bytes after the last tensor are not described by the header")
    return tensors, dict(metadata_raw)


# --- pickles -------------------------------------------------------------------------------------

class _InertObject:
    """Stand-in for harmless bookkeeping objects in old Lightning checkpoints.

    Original SD1.x ``.ckpt`` files carry a ``ModelCheckpoint`` callback next to the weights; the
    weights_only unpickler instantiates this inert class instead of importing Lightning.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _extra_safe_globals() -> list[Any]:
    """Allow-list additions (same spirit as A1111's restricted unpickler) on top of torch's own."""
    import codecs

    import numpy as np

    extra: list[Any] = [(codecs.encode, "_codecs.encode")]
    for mod in ("pytorch_lightning.callbacks.model_checkpoint", "lightning.pytorch.callbacks.model_checkpoint"):
        extra.append((_InertObject, f"{mod}.ModelCheckpoint"))
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved numpy.core -> numpy._core
    for modname in ("numpy.core.multiarray", "numpy._core.multiarray"):
        extra.append((core.multiarray.scalar, f"{modname}.scalar"))
        extra.append((core.multiarray._reconstruct, f"{modname}._reconstruct"))
    extra += [np.dtype, np.ndarray]
    dtypes_mod = getattr(np, "dtypes", None)
    if dtypes_mod is not None:  # numpy >= 1.25 pickles dtypes by their class
        extra += [getattr(dtypes_mod, n) for n in dir(dtypes_mod) if n.endswith("DType")]
    return extra


_allow_list_registered = False


def _register_allow_list() -> None:
    # Registered once, process-wide, instead of torch's ``safe_globals`` context manager: that one
    # removes the entries on exit, which breaks a concurrent load in another thread.  The entries are
    # inert (no code runs), so also allowing them for other weights_only loads is harmless.
    global _allow_list_registered
    if not _allow_list_registered:
        import warnings

        torch.serialization.add_safe_globals(_extra_safe_globals())
        # Old .ckpt files trigger a harmless "Detected pickle protocol" notice from torch on every load.
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        _allow_list_registered = True


def _torch_load_weights_only(path: Path, *, mmap: bool = False) -> Any:
    import pickle

    _register_allow_list()
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"GLOBAL ([\w.]+)", msg)
        if m:
            raise _fail(path, f"refused: this pickle would run code or build objects ({m.group(1)}); only plain "
                              "tensors are accepted. Use a .safetensors version of this model.") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(\n|$)", msg)
        reason = detail.group(1).strip() if detail else msg.splitlines()[0][:120]
        raise _fail(path, f"refused: not a readable plain-tensor PyTorch checkpoint ({reason}); "
                          "the file is corrupt, not a PyTorch file, or uses unsupported pickle features") from None
    except (OSError, MemoryError):
        raise  # the read failed or memory ran out: says nothing about the file
    except Exception as e:  # noqa: BLE001 - any parser failure on untrusted bytes means "corrupt"
        if "can't allocate memory" in str(e) or "out of memory" in str(e).lower():
            raise
        first = (str(e).splitlines() or [""])[0].split(". ")[0] or e.__class__.__name__
        raise _fail(path, f"cannot read PyTorch checkpoint, file is truncated or corrupt ({first[:160]})") from None


def load_pickle(path: str | Path) -> Any:
    """A PyTorch pickle (.pt/.ckpt/.bin) read with ``torch.load(weights_only=True)`` and the project's
    allow-list, for files whose top level is not a plain state dict (embeddings, hypernetworks).
    A pickle that would run code, a truncated or a foreign file gives a ModelFileError with the reason."""
    path = Path(path)
    _check_exists(path)
    return _torch_load_weights_only(path)


def _tensors_only(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # Lightning / original CompVis wrapper
    if not isinstance(obj, dict):
        raise _fail(path, f"expected a dict of tensors, found {type(obj).__name__}")
    out = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not out:
        raise _fail(path, "file contains no tensors")
    return out


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise _fail(path, "file not found")
    if path.stat().st_size == 0:
        raise _fail(path, "file is empty (0 bytes); the download or copy probably failed")


def load_state_dict(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    dtype: torch.dtype | None = None,
    prefixes: Iterable[str] | None = None,
    mmap: bool = False,
) -> dict[str, torch.Tensor]:
    """Load all tensors of a model file.

    ``dtype``: cast floating-point tensors one by one while reading (no second full copy).
    ``prefixes``: only keep keys starting with one of these (skips e.g. EMA copies we don't use).
    ``mmap``: keep CPU safetensors tensors backed by the file mapping (copy-on-write, zero-copy,
    fastest).  Off by default: if the file is truncated or rewritten in place while mapped, reading
    a weight kills the process with SIGBUS, so by default every tensor owns its memory.
    """
    path = Path(path)
    _check_exists(path)
    keep = tuple(prefixes) if prefixes is not None else None
    suffix = path.suffix.lower()

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if dtype is not None and t.is_floating_point() and t.dtype != dtype else t

    if suffix in SAFETENSORS_SUFFIXES:
        infos, _meta = read_safetensors_header(path)
        if not mmap:
            try:
                return {k: v.to(device) for k, v in _read_safetensors(path, infos, keep, cast).items()}
            except OSError as e:
                raise _fail(path, f"cannot read safetensors data ({e.strerror or e})", transient=True) from None
        from safetensors import SafetensorError, safe_open

        out: dict[str, torch.Tensor] = {}
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                for key in f.keys():
                    if keep is None or key.startswith(keep):
                        out[key] = cast(f.get_tensor(key))  # backed by the mapping (see ``mmap``)
        except (SafetensorError, OSError) as e:
            raise _fail(path, f"cannot read safetensors data ({e})") from None
        return out
    if suffix in PICKLE_SUFFIXES:
        sd = _tensors_only(_torch_load_weights_only(path), path)
        return {k: cast(v).to(device) for k, v in sd.items() if keep is None or k.startswith(keep)}
    raise _fail(path, f"unsupported file type {suffix!r} (expected .safetensors, .ckpt, .pt, .pth or .bin)")


def read_key_shapes(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Tensor shapes and metadata of a model file; reads only the header of a safetensors file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        infos, meta = read_safetensors_header(path)
        return {k: v.shape for k, v in infos.items()}, meta
    if suffix in PICKLE_SUFFIXES:
        _check_exists(path)
        # mmap avoids reading all weights just to learn shapes (zip format only).
        sd = _tensors_only(_torch_load_weights_only(path, mmap=zipfile.is_zipfile(path)), path)
        return {k: tuple(v.shape) for k, v in sd.items()}, {}
    raise _fail(path, f"unsupported file type {suffix!r} (expected .safetensors, .ckpt, .pt, .pth or .bin)")
