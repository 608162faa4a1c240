"""Memory figures for people: GET /sdapi/v1/memory (A1111's shape) and the line under the gallery."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import psutil
import torch

GB = 1024 ** 3


def _ram() -> dict[str, Any]:
    try:
        proc = psutil.Process(os.getpid())
        rss = proc.memory_info().rss
        total = psutil.virtual_memory().total
        return {"free": total - rss, "used": rss, "total": total}
    except Exception as e:  # noqa: BLE001 - a report, never a failure
        return {"error": str(e)}


def _cuda(device: torch.device | None) -> dict[str, Any]:
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return {"error": "unavailable: no CUDA device" if not torch.cuda.is_available()
                else f"unavailable: running on {device}"}
    try:
        free, total = torch.cuda.mem_get_info(device)
        s = torch.cuda.memory_stats(device)

        def pair(key: str) -> dict[str, int]:
            return {"current": int(s.get(f"{key}.all.current", 0)), "peak": int(s.get(f"{key}.all.peak", 0))}
        return {"system": {"free": free, "used": total - free, "total": total},
                "active": pair("active_bytes"), "allocated": pair("allocated_bytes"),
                "reserved": pair("reserved_bytes"), "inactive": pair("inactive_split_bytes"),
                "events": {"retries": int(s.get("num_alloc_retries", 0)), "oom": int(s.get("num_ooms", 0))}}
    except Exception as e:  # noqa: BLE001
        return {"error": str(e)}


def memory_report(memory: Any = None, caches: list[Any] | None = None) -> dict[str, Any]:
    """A1111's `{ram: {free, used, total}, cuda: {system, active, allocated, reserved, inactive,
    events}}` (process RSS as `ram.used`, like A1111), plus `manager`: our placement of each part,
    and `caches`: what each bounded cache holds (``BoundedCache.stats()``: entries, bytes, bounds,
    hits, misses, evictions)."""
    out: dict[str, Any] = {"ram": _ram(), "cuda": _cuda(memory.device if memory is not None else None)}
    if caches is not None:
        out["caches"] = [dataclasses.asdict(c.stats()) for c in caches]
    if memory is not None:
        out["manager"] = {
            "mode": memory.mode, "device": str(memory.device),
            "budget_mb": None if memory.budget is None else memory.budget // (1024 * 1024),
            "gpu_weights_mb": None if memory.gpu_weights is None else memory.gpu_weights // (1024 * 1024),
            "device_weights_mb": round(memory.device_bytes() / (1024 * 1024), 1),
            "oom_recovered": memory.retry_count, "oom_total": memory.oom_count,
            "parts": memory.describe(),
        }
    return out


class MemoryWatch:
    """Peak device memory of one job (A1111's "A: … R: … Sys: …" line under the gallery)."""

    def __init__(self, device: torch.device | None) -> None:
        self.device = device
        self.cuda = device is not None and device.type == "cuda" and torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)

    def summary(self) -> str:
        if self.cuda:
            s = torch.cuda.memory_stats(self.device)
            free, total = torch.cuda.mem_get_info(self.device)
            used = total - free
            return (f"A: {s.get('active_bytes.all.peak', 0) / GB:.2f} GB, "
                    f"R: {s.get('reserved_bytes.all.peak', 0) / GB:.2f} GB, "
                    f"Sys: {used / GB:.1f}/{total / GB:.0f} GB ({100 * used / total:.1f}%)")
        vm = psutil.virtual_memory()
        rss = psutil.Process(os.getpid()).memory_info().rss
        return (f"RAM: {rss / GB:.2f} GB this process, Sys: {(vm.total - vm.available) / GB:.1f}/"
                f"{vm.total / GB:.0f} GB ({100 * (vm.total - vm.available) / vm.total:.1f}%)")
