"""Memory that stays bounded over weeks: the LoRA cache holds at most its bytes, in the file's dtype.

A real tiny checkpoint is loaded through the ModelService; fifty distinct kohya-layout LoRA files
(fp16, ~2 MB each) are applied one after another through the same call the generation makes
(`ModelService.activate_networks`); the cache never holds more than its bound and the process's
resident memory grows by no more than the bound plus a fixed slack.
"""
from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tiny_models import make_tiny_checkpoint
from webui.memory.bounded_cache import MB, BoundedCache, tensor_bytes
from webui.memory.devices import DevicePolicy
from webui.models.registry import CheckpointRegistry
from webui.prompts.extra_networks import ExtraNetworkParams
from webui.services.model_service import ModelService

N_LORAS = 50
BOUND_MB = 12
SLACK_MB = 40  # allocator slack, the patcher's float32 work tensors and pages Python keeps


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def linear_targets(model) -> dict[str, torch.nn.Linear]:
    """kohya name → layer for every Linear of the UNet and the text encoder."""
    out = {}
    for name, mod in model.sd.unet.named_modules():
        if isinstance(mod, torch.nn.Linear):
            out["lora_unet_" + name.replace(".", "_")] = mod
    for name, mod in model.sd.text_encoders[0].named_modules():
        if isinstance(mod, torch.nn.Linear):
            hf = name if name.startswith("text_model.") else "text_model." + name
            out["lora_te_" + hf.replace(".", "_")] = mod
    return out


def write_kohya_fp16(path: Path, layers: dict[str, torch.nn.Linear], rank: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for key, mod in layers.items():
        out_f, in_f = mod.weight.shape
        sd[f"{key}.lora_down.weight"] = (torch.randn(rank, in_f, generator=g) * 0.01).half()
        sd[f"{key}.lora_up.weight"] = (torch.randn(out_f, rank, generator=g) * 0.01).half()
        sd[f"{key}.alpha"] = torch.tensor(float(rank)).half()
    save_file(sd, str(path), metadata={"ss_output_name": path.stem})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, one_torch_thread):
    root = tmp_path_factory.mktemp("membound")
    (root / "models").mkdir()
    (root / "Lora").mkdir()
    make_tiny_checkpoint(root / "models" / "sd1.safetensors", family="sd1", seed=5)
    registry = CheckpointRegistry(root / "models", root / "cache")
    registry.refresh()
    models = ModelService(registry, DevicePolicy.from_flags(["all"], None, "full", True, True),
                          lora_dirs=[root / "Lora"])
    model = models.load("sd1.safetensors")
    layers = linear_targets(model)
    width = sum(m.weight.shape[0] + m.weight.shape[1] for m in layers.values())
    rank = max(8, (2 * MB) // (2 * width))  # ~2 MB of fp16 per file
    for i in range(N_LORAS):
        write_kohya_fp16(root / "Lora" / f"style{i:02d}.safetensors", layers, rank, seed=i)
    models.loras.refresh()
    return models, model, root


def activate(models: ModelService, model, name: str | None):
    tags = [ExtraNetworkParams([name, "0.5"])] if name else []
    return models.activate_networks(model, {"lora": tags})


def test_fifty_loras_in_turn_stay_within_the_byte_bound(env) -> None:
    models, model, root = env
    cache = models.loras.cache
    models.loras.set_cache_mb(BOUND_MB)
    files = sorted((root / "Lora").glob("*.safetensors"))
    total_mb = sum(p.stat().st_size for p in files) / MB
    assert total_mb > 4 * BOUND_MB  # keeping them all would be far over the bound

    report = activate(models, model, files[0].stem)  # warm-up: first patch, first allocations
    assert not report.warnings, report.warnings
    gc.collect()
    base = rss_mb()
    peak = base
    for p in files[1:]:
        report = activate(models, model, p.stem)
        assert not report.warnings, report.warnings
        assert p.stem in report.infotext["Lora hashes"]
        assert cache.bytes <= BOUND_MB * MB
        peak = max(peak, rss_mb())
    stats = cache.stats()
    assert stats.evictions >= N_LORAS - 1 - BOUND_MB // 2, stats
    assert 1 <= stats.entries <= BOUND_MB // 2 + 1, stats
    assert peak - base <= BOUND_MB + SLACK_MB, (base, peak, stats)

    # fp16 in the file: fp16 in the cache (half the bytes of float32), the weights still change
    last = models.loras.load(files[-1])
    dtypes = {t.dtype for mod in last.modules.values() for k, t in mod.tensors.items() if k != "alpha"}
    assert dtypes == {torch.float16}
    assert abs(tensor_bytes(last) - files[-1].stat().st_size) < 64 * 1024
    assert models.loras.active_layers  # applied to the model

    # the most recent file is a hit; one evicted long ago is read again
    hits, misses = cache.hits, cache.misses
    models.loras.load(files[-1])
    assert cache.hits == hits + 1
    models.loras.load(files[0])
    assert cache.misses == misses + 1
    activate(models, model, None)
    assert not models.loras.active_layers


def test_setting_the_bound_to_zero_keeps_nothing_and_a_changed_file_is_read_again(env) -> None:
    models, model, root = env
    cache = models.loras.cache
    models.loras.set_cache_mb(0)
    assert len(cache) == 0 and cache.bytes == 0
    path = root / "Lora" / "style03.safetensors"
    assert models.loras.load(path) is not models.loras.load(path)  # nothing kept: read at every use

    models.loras.set_cache_mb(BOUND_MB)
    first = models.loras.load(path)
    assert models.loras.load(path) is first
    layers = linear_targets(model)
    write_kohya_fp16(path, layers, rank=4, seed=999)  # replaced on disk: new stamp
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    again = models.loras.load(path)
    assert again is not first
    assert next(iter(again.modules.values())).tensors["down"].shape[0] == 4


def test_bounded_cache_counts_evicts_oldest_and_releases(tmp_path: Path) -> None:
    released: list[str] = []
    cache: BoundedCache[dict] = BoundedCache("test", max_bytes=3 * 4096, max_entries=10,
                                             on_evict=lambda v: released.append(v["name"]))
    for name in "abcd":
        cache.put(name, {"name": name, "t": torch.zeros(1024)})  # 4096 bytes each
    assert released == ["a"] and len(cache) == 3 and cache.bytes == 3 * 4096
    assert cache.get("b")["name"] == "b"  # b is now the most recent: c goes next
    cache.put("e", {"name": "e", "t": torch.zeros(1024)})
    assert released == ["a", "c"]
    cache.set_limits(max_entries=1)
    assert [v["name"] for v in cache.values()] == ["e"]
    shared = torch.zeros(1024)
    assert tensor_bytes({"x": shared, "y": shared[:10], "m": torch.nn.Linear(4, 4)}) == 4096 + (16 + 4) * 4
