"""Checkpoint registry on real files: scanning, names, titles, hashes, matching, broken files."""
from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from pathlib import Path

import pytest

from webui.hashes import HashCache, addnet_hash_safetensors, legacy_model_hash, sha256_file
from webui.models.registry import CheckpointNotFound, CheckpointRegistry


def write_safetensors(path: Path, payload: bytes = b"\0" * 16, metadata: dict | None = None) -> Path:
    """Minimal valid safetensors: one F32 tensor of len(payload)//4 elements."""
    header: dict = {"model.diffusion_model.w": {"dtype": "F32", "shape": [len(payload) // 4], "data_offsets": [0, len(payload)]}}
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)
    return path


def write_ckpt(path: Path, body: bytes = b"zip-content") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PK\x03\x04" + body)
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> tuple[Path, Path]:
    ckpt = tmp_path / "Stable-diffusion"
    write_safetensors(ckpt / "v1-5-pruned-emaonly.safetensors", b"\1" * 32)
    write_safetensors(ckpt / "SDXL" / "juggernaut_v9.safetensors", b"\2" * 32,
                      {"modelspec.title": "Juggernaut XL"})
    write_ckpt(ckpt / "anything-v3.ckpt")
    write_safetensors(ckpt / "model10.safetensors")
    write_safetensors(ckpt / "Model2.safetensors", b"\3" * 8)
    write_safetensors(ckpt / "sd15.vae.safetensors")   # VAEs beside checkpoints are not checkpoints
    write_ckpt(ckpt / "other.vae.ckpt")
    (ckpt / "x.vae.pt").write_bytes(b"PK\x03\x04")
    (ckpt / "readme.txt").write_text("not a model")
    diff = ckpt / "diffusers" / "tiny-sd"
    (diff / "unet").mkdir(parents=True)
    (diff / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    write_safetensors(diff / "unet" / "diffusion_pytorch_model.safetensors")
    return ckpt, tmp_path / "cache"


def test_scan_names_and_order(tree: tuple[Path, Path]) -> None:
    ckpt, cache = tree
    reg = CheckpointRegistry(ckpt, cache)
    items = reg.refresh()
    names = [i.name for i in items]
    assert names == ["anything-v3.ckpt", "diffusers/tiny-sd", "Model2.safetensors", "model10.safetensors",
                     "SDXL/juggernaut_v9.safetensors", "v1-5-pruned-emaonly.safetensors"]
    assert reg.list() == items
    jug = reg.get("juggernaut_v9")
    assert jug.stem == "juggernaut_v9" and jug.model_name == "SDXL_juggernaut_v9"
    assert jug.path == ckpt / "SDXL" / "juggernaut_v9.safetensors"
    assert jug.metadata_title == "Juggernaut XL"
    assert jug.title == "SDXL/juggernaut_v9.safetensors" and jug.shorthash is None  # not hashed at listing
    folder = reg.get("diffusers/tiny-sd")
    assert folder.is_folder and folder.stem == "tiny-sd" and folder.model_name == "diffusers_tiny-sd"
    assert all(not i.error for i in items)


def test_hash_title_and_disk_cache(tree: tuple[Path, Path]) -> None:
    ckpt, cache = tree
    f = ckpt / "v1-5-pruned-emaonly.safetensors"
    reg = CheckpointRegistry(ckpt, cache)
    reg.refresh()
    info = reg.get("v1-5-pruned-emaonly")
    digest = reg.ensure_hash(info)
    expected = hashlib.sha256(f.read_bytes()).hexdigest()
    assert digest == expected == info.sha256 == sha256_file(f)
    assert info.shorthash == expected[:10]
    assert info.title == f"v1-5-pruned-emaonly.safetensors [{expected[:10]}]"
    data = json.loads((cache / "hashes.json").read_text())
    entry = data["sha256"][str(f.absolute())]
    assert entry == {"mtime_ns": f.stat().st_mtime_ns, "size": f.stat().st_size, "sha256": expected}
    assert not list(cache.glob("*.tmp"))

    # a new registry (next start) knows the hash without reading the file: prove by a fake cached value
    entry["sha256"] = "ab" * 32
    (cache / "hashes.json").write_text(json.dumps(data))
    reg2 = CheckpointRegistry(ckpt, cache)
    reg2.refresh()
    assert reg2.get("v1-5-pruned-emaonly").sha256 == "ab" * 32
    assert reg2.ensure_hash(reg2.get("v1-5-pruned-emaonly")) == "ab" * 32

    # touching the file (mtime change) invalidates the cached value and forces a recompute
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    reg2.refresh()
    again = reg2.get("v1-5-pruned-emaonly")
    assert again.sha256 is None
    assert reg2.ensure_hash(again) == expected
    assert json.loads((cache / "hashes.json").read_text())["sha256"][str(f.absolute())]["mtime_ns"] == \
        st.st_mtime_ns + 5_000_000_000
    # size change too (content rewritten, mtime restored)
    write_safetensors(f, b"\7" * 64)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    reg2.refresh()
    assert reg2.ensure_hash(reg2.get("v1-5-pruned-emaonly")) == hashlib.sha256(f.read_bytes()).hexdigest()


def test_name_matching_rules(tree: tuple[Path, Path]) -> None:
    ckpt, cache = tree
    reg = CheckpointRegistry(ckpt, cache)
    reg.refresh()
    v15 = reg.get("v1-5-pruned-emaonly.safetensors")
    sha = reg.ensure_hash(v15)
    short = sha[:10]
    for alias in ("v1-5-pruned-emaonly.safetensors", "v1-5-pruned-emaonly", short, sha,
                  f"v1-5-pruned-emaonly.safetensors [{short}]", f"v1-5-pruned-emaonly [{short}]"):
        assert reg.get(alias).path == v15.path, alias
    assert reg.get("SDXL_juggernaut_v9").name == "SDXL/juggernaut_v9.safetensors"  # model_name
    assert reg.get("SDXL/juggernaut_v9.safetensors").stem == "juggernaut_v9"
    # substring of the title, shortest title wins
    assert reg.get("anything").name == "anything-v3.ckpt"
    assert reg.get("odel").name == "Model2.safetensors"
    # a stale [hash] from another machine still finds the file by name
    assert reg.get("anything-v3.ckpt [0000000000]").name == "anything-v3.ckpt"
    # old 8-hex A1111 hash (64 KiB at offset 1 MiB) is an alias too, computed lazily
    write_safetensors(ckpt / "big.safetensors", os.urandom(0x120000))
    reg.refresh()
    assert reg.get(legacy_model_hash(ckpt / "big.safetensors")).name == "big.safetensors"
    with pytest.raises(CheckpointNotFound) as e:
        reg.get("does-not-exist")
    assert isinstance(e.value, KeyError) and "does-not-exist" in str(e.value)
    with pytest.raises(KeyError):
        reg.get("")


def test_broken_files_listed_with_error(tree: tuple[Path, Path]) -> None:
    ckpt, cache = tree
    (ckpt / "empty.safetensors").write_bytes(b"")
    (ckpt / "garbage.safetensors").write_bytes(b"\xff" * 64)
    (ckpt / "garbage.ckpt").write_bytes(b"hello world, not a checkpoint")
    bad_dir = ckpt / "broken-diffusers"
    bad_dir.mkdir()
    (bad_dir / "model_index.json").write_text("{not json")
    reg = CheckpointRegistry(ckpt, cache)
    items = {i.name: i for i in reg.refresh()}
    for name in ("empty.safetensors", "garbage.safetensors", "garbage.ckpt", "broken-diffusers"):
        assert items[name].error, name
    assert "empty" in (items["empty.safetensors"].error or "")
    good = [n for n, i in items.items() if not i.error]
    assert "v1-5-pruned-emaonly.safetensors" in good and "anything-v3.ckpt" in good and len(good) == 6
    # replacing a broken file with a valid one clears the error on the next refresh
    write_safetensors(ckpt / "garbage.safetensors")
    reg.refresh()
    assert reg.get("garbage.safetensors").error is None


def test_mark_unusable_survives_refresh_until_file_changes(tree: tuple[Path, Path]) -> None:
    ckpt, cache = tree
    reg = CheckpointRegistry(ckpt, cache)
    reg.refresh()
    info = reg.get("model10")
    reg.mark_unusable(info, "unknown architecture")
    assert info.error == "unknown architecture"
    reg.refresh()
    assert reg.get("model10").error == "unknown architecture"
    time.sleep(0.01)
    write_safetensors(ckpt / "model10.safetensors", b"\5" * 24)
    reg.refresh()
    assert reg.get("model10").error is None


def test_builtin_and_extra_files(tree: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, cache = tree
    shipped = write_safetensors(tmp_path / "package" / "tiny-sd15.safetensors")
    extra = write_ckpt(tmp_path / "elsewhere" / "cli-model.ckpt")
    inside = ckpt / "model10.safetensors"
    reg = CheckpointRegistry(ckpt, cache, extra_files=[extra, inside], builtin=[shipped])
    items = reg.refresh()
    names = [i.name for i in items]
    assert "tiny-sd15.safetensors" in names and "cli-model.ckpt" in names
    assert names.count("model10.safetensors") == 1  # inside the folder: listed once, relative name
    assert reg.get("tiny-sd15").path == shipped
    # an empty checkpoint folder still lists the shipped model
    empty = tmp_path / "empty-ckpt"
    assert [i.name for i in CheckpointRegistry(empty, cache, builtin=[shipped]).refresh()] == ["tiny-sd15.safetensors"]


def test_hash_helpers(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4
    f = write_safetensors(tmp_path / "lora.safetensors", payload, {"ss_output_name": "x"})
    assert addnet_hash_safetensors(f) == hashlib.sha256(payload).hexdigest()
    # metadata edits do not change the addnet hash
    g = write_safetensors(tmp_path / "lora2.safetensors", payload, {"ss_output_name": "renamed"})
    assert addnet_hash_safetensors(g) == addnet_hash_safetensors(f)
    assert sha256_file(g) != sha256_file(f)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(0x100000 + 0x10000 + 10))
    assert legacy_model_hash(big) == hashlib.sha256(big.read_bytes()[0x100000:0x110000]).hexdigest()[:8]
    cache = HashCache(tmp_path / "c" / "hashes.json")
    assert cache.get_or_compute(f, "addnet") == hashlib.sha256(payload).hexdigest()
    assert cache.lookup(f, "addnet") == hashlib.sha256(payload).hexdigest()
    assert cache.lookup(f, "sha256") is None


def test_refresh_is_fast_without_hashing(tmp_path: Path) -> None:
    ckpt = tmp_path / "ck"
    for i in range(200):
        write_safetensors(ckpt / f"m{i}.safetensors", b"\0" * 1024)
    reg = CheckpointRegistry(ckpt, tmp_path / "cache")
    t0 = time.perf_counter()
    items = reg.refresh()
    assert len(items) == 200 and time.perf_counter() - t0 < 2.0
    assert not (tmp_path / "cache" / "hashes.json").exists()  # listing never hashes


def test_fallback_header_reader(tmp_path: Path) -> None:
    """The registry's own reader (used when file_io is unavailable) accepts/rejects like the format says."""
    from webui.models.registry import _own_safetensors_header

    good = write_safetensors(tmp_path / "g.safetensors", metadata={"modelspec.title": "T"})
    assert _own_safetensors_header(good)["__metadata__"] == {"modelspec.title": "T"}
    bad = tmp_path / "b.safetensors"
    for raw in (b"\1\2", struct.pack("<Q", 10_000) + b"{}", struct.pack("<Q", 4) + b"[1] "):
        bad.write_bytes(raw)
        with pytest.raises(ValueError):
            _own_safetensors_header(bad)


def test_a_network_file_in_the_checkpoint_folder_is_listed_with_what_it_is(tmp_path: Path) -> None:
    """Keys that belong to no Stable Diffusion model: unusable at listing time, with a hint."""
    from safetensors.torch import save_file
    import torch

    from webui.models.registry import CheckpointRegistry

    ckpt = tmp_path / "models"
    ckpt.mkdir()
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)},
              str(ckpt / "my-lora.safetensors"))
    save_file({"foo.bar": torch.zeros(2)}, str(ckpt / "random.safetensors"))
    write_safetensors(ckpt / "fine.safetensors")
    save_file({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(6, 2)},
              str(ckpt / "sd3-medium.safetensors"))
    reg = CheckpointRegistry(ckpt, tmp_path / "cache")
    reg.refresh()
    by_name = {c.model_name: c for c in reg.list()}
    assert "no Stable Diffusion weights" in by_name["my-lora"].error and "LoRA" in by_name["my-lora"].error
    assert "'foo.bar'" in by_name["random"].error
    assert by_name["fine"].error is None
    assert "SD3/Flux" in by_name["sd3-medium"].error
