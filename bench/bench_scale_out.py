"""Benchmark: scale-out on Ray Serve against the in-process queue, measured side by side in one run.

    python bench/bench_scale_out.py [--jobs 16] [--clients 2] [--steps 8] [--size 128] [--replicas N]

Each scenario is the real server (launch.py) on the same two checkpoints (mid-size SD1 layout, as in
bench_txt2img.py, written twice with different metadata so their hashes differ), fed a mixed workload:
`--clients` API clients (users) each sending `--jobs / --clients` txt2img jobs, each client on one of the
two checkpoints and changing to the other every `--switch-every` jobs. Printed per scenario: throughput (images/min), p50/p95 latency, checkpoint loads.

Scenarios: in-process; Ray with 1 replica; Ray with N replicas and affinity routing (multiplexed by
checkpoint); Ray with N replicas and any-replica routing (Serve's own choice of a free replica). Then the overhead of the Ray path for one job
(same checkpoint, warm) against in-process: goal ≤ 5% at SD1.5 size on a GPU; on a CPU it is printed.

Replicas: one per GPU where there are GPUs (N = GPU count), else `--replicas` CPU replicas (default 2).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import requests  # noqa: E402

from bench_txt2img import build_bench_checkpoint  # noqa: E402
from conftest import Server, start_server, stop_server  # noqa: E402


def two_checkpoints(ckpt_dir: Path) -> list[str]:
    from safetensors import safe_open
    from safetensors.torch import save_file

    first = build_bench_checkpoint(ckpt_dir / "bench-a.safetensors")
    with safe_open(str(first), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata() or {})
    save_file(tensors, str(ckpt_dir / "bench-b.safetensors"), metadata={**meta, "bench": "b"})
    return ["bench-a", "bench-b"]


def gpu_count() -> int:
    try:
        import torch
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def job(server: Server, checkpoint: str, steps: int, size: int, seed: int) -> float:
    t0 = time.perf_counter()
    r = requests.post(server.api("txt2img"), timeout=1800, json={
        "prompt": "a red square on a blue floor", "steps": steps, "width": size, "height": size, "seed": seed,
        "sampler_name": "Euler", "override_settings": {"sd_model_checkpoint": checkpoint}})
    r.raise_for_status()
    return time.perf_counter() - t0


def workload(server: Server, checkpoints: list[str], jobs: int, clients: int, steps: int,
             size: int, switch_every: int) -> dict[str, Any]:
    """`clients` threads (users), each on a checkpoint of its own that it changes every `switch_every`
    jobs (the clients out of step, so both checkpoints are always in use); wall time covers them all."""
    per = max(1, jobs // clients)
    latencies: list[float] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for i in range(per):
            ck = checkpoints[(c + i // switch_every) % len(checkpoints)]
            t = job(server, ck, steps, size, seed=1000 * c + i)
            with lock:
                latencies.append(t)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
    return {"images": len(latencies), "wall_s": wall, "per_min": 60 * len(latencies) / wall,
            "p50": statistics.median(latencies), "p95": q[18]}


def backend(server: Server) -> dict[str, Any]:
    return requests.get(f"{server.url}/webui/v1/backend", timeout=10).json()


def start(data_dir: Path, ckpt_dir: Path, *extra: str) -> Server:
    server = start_server(data_dir, ckpt_dir, *extra)
    deadline = time.time() + 600
    while "--backend" in extra and time.time() < deadline:
        b = backend(server)
        if b.get("replicas_running", 0) >= b.get("capacity", 1):
            break
        if b.get("failure"):
            raise RuntimeError(b["failure"])
        time.sleep(1)
    return server


def scenario(name: str, work: Path, ckpt_dir: Path, checkpoints: list[str], args: argparse.Namespace,
             *extra: str, threads: int = 0) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(dir=work, prefix="data-"))
    before = dict(os.environ)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        server = start(data, ckpt_dir, *extra)
    finally:
        os.environ.clear()
        os.environ.update(before)
    try:
        for ck in checkpoints:  # warm-up: the first load of each is not the routing's doing
            job(server, ck, 1, args.size, 0)
        before = backend(server)
        out = workload(server, checkpoints, args.jobs, args.clients, args.steps, args.size, args.switch_every)
        after = backend(server)
        if after["backend"] == "ray":
            out["loads"] = after["loads"] - before["loads"]
            out["hit_rate"] = 1 - out["loads"] / max(1, after["jobs"] - before["jobs"])
        single = []
        for i in range(args.repeats):  # one job at a time on one warm checkpoint: the path's own cost
            single.append(job(server, checkpoints[0], args.steps, args.size, seed=7 + i))
        out["single_s"] = statistics.median(single)
    finally:
        stop_server(server)
    out["name"] = name
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--switch-every", type=int, default=4, help="a client changes checkpoint after this many jobs")
    ap.add_argument("--replicas", type=int, default=2, help="CPU replicas when there is no GPU")
    args = ap.parse_args()

    gpus = gpu_count()
    n = gpus or args.replicas
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    ckpt_dir = work / "models"
    ckpt_dir.mkdir()
    checkpoints = two_checkpoints(ckpt_dir)
    cpu = [] if gpus else ["--ray-cpu-replicas"]
    print(f"device: {'%d GPU(s)' % gpus if gpus else 'CPU'}; {args.jobs} jobs from {args.clients} clients, each "
          f"changing checkpoint (of 2) every {args.switch_every} jobs; {args.size}x{args.size}, {args.steps} steps")
    # a CPU replica computes with one thread (Ray sets OMP_NUM_THREADS to its num_cpus): in-process too
    results = [scenario("in-process", work, ckpt_dir, checkpoints, args, threads=0 if gpus else 1)]
    results.append(scenario("ray, 1 replica", work, ckpt_dir, checkpoints, args, "--backend", "ray",
                            *(cpu + ["1"] if cpu else ["--serve-config", _config(work, 1)])))
    for routing in ("affinity", "any"):
        results.append(scenario(f"ray, {n} replicas, {routing}", work, ckpt_dir, checkpoints, args, "--backend",
                                "ray", "--ray-routing", routing,
                                *(cpu + [str(n)] if cpu else ["--serve-config", _config(work, n)])))
    print(f"\n{'scenario':<28}{'images/min':>11}{'p50 s':>8}{'p95 s':>8}{'loads':>7}{'hit rate':>10}{'1 job s':>9}")
    for r in results:
        loads = f"{r['loads']}" if "loads" in r else "-"
        hit = f"{r['hit_rate']:.0%}" if "hit_rate" in r else "-"
        print(f"{r['name']:<28}{r['per_min']:>11.1f}{r['p50']:>8.2f}{r['p95']:>8.2f}{loads:>7}{hit:>10}"
              f"{r['single_s']:>9.2f}")
    base = results[0]
    one = results[1]
    print(f"\nRay path overhead for one job: {one['single_s'] / base['single_s']:.3f}x in-process "
          f"(goal <= 1.05 at SD1.5 size on a GPU)")
    aff, rnd = results[2], results[3]
    print(f"affinity vs any-replica routing, {n} replicas: {aff.get('loads')} vs {rnd.get('loads')} checkpoint loads, "
          f"{aff['per_min'] / rnd['per_min']:.2f}x the throughput")
    print(f"{n} replicas vs 1 (affinity): {aff['per_min'] / one['per_min']:.2f}x the throughput")
    print(json.dumps(results))


def _config(work: Path, replicas: int) -> str:
    path = work / f"serve-{replicas}.yaml"
    path.write_text(f"num_replicas: {replicas}\nray_actor_options: {{num_gpus: 1}}\n")
    return str(path)


if __name__ == "__main__":
    main()
