"""`--backend ray`: start or join a Ray cluster, run the `GenerationWorker` deployment on it, and hand
the front a `RayExecutor` for it.

The deployment's shape comes from `--serve-config` (YAML or JSON), either our short form

    num_replicas: 2                  # or autoscaling_config: {min_replicas, max_replicas, target_ongoing_requests}
    ray_actor_options: {num_gpus: 1}
    max_models_per_replica: 2        # default: the sd_checkpoints_limit option
    start_timeout_s: 60              # a job waits this long for a first running replica, then 503
    silence_timeout_s: 60            # a replica silent this long is given up and the job retried

or Ray Serve's own config file, whose `applications[*].deployments` entry named `GenerationWorker`
is read the same way. Without a file: one replica per visible GPU (`num_gpus: 1` each), or
`--ray-cpu-replicas N` CPU replicas.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.serving.ray_executor import JobControl, RayExecutor
from webui.serving.ray_worker import CONTROL_ACTOR, NAMESPACE, worker_deployment

log = logging.getLogger(__name__)

# Ray's crash handler (read once, when ray is imported) would take SIGTERM from uvicorn, and a stopped
# server would never take its workers down
os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")

APP_NAME = "webui"
ROOT = Path(__file__).resolve().parents[2]


class ServeConfigError(ValueError):
    """A --serve-config that cannot be used (the start stops with its message)."""


@dataclass
class WorkerShape:
    num_replicas: int | None = None
    autoscaling: dict[str, Any] | None = None
    actor_options: dict[str, Any] = field(default_factory=dict)
    max_models: int = 1
    start_timeout_s: float = 60.0  # how long a job waits for a first running replica before a 503
    silence_timeout_s: float = 60.0  # a replica that sends nothing this long is given up (the job is retried)

    @property
    def capacity(self) -> int:
        """How many jobs the front runs side by side (the most replicas there may be)."""
        if self.autoscaling:
            return max(1, int(self.autoscaling.get("max_replicas") or 1))
        return max(1, int(self.num_replicas or 1))

    @property
    def min_replicas(self) -> int:
        if self.autoscaling:
            return int(self.autoscaling.get("min_replicas", 1))
        return int(self.num_replicas or 1)

    def deployment_options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ray_actor_options": dict(self.actor_options)}
        if self.autoscaling:
            out["autoscaling_config"] = dict(self.autoscaling)
        else:
            out["num_replicas"] = int(self.num_replicas or 1)
        return out


def read_serve_config(path: Path) -> dict[str, Any]:
    """The GenerationWorker entry of `path` (our short form or Ray Serve's config file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ServeConfigError(f"--serve-config {path}: {e.strerror or e}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
    except Exception as e:  # a YAML or JSON syntax error: say where
        raise ServeConfigError(f"--serve-config {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {e}") from None
    if not isinstance(data, dict):
        raise ServeConfigError(f"--serve-config {path}: expected a mapping at the top")
    for app in data.get("applications") or []:
        for dep in (app or {}).get("deployments") or []:
            if (dep or {}).get("name") == "GenerationWorker":
                return dict(dep)
    if "applications" in data:
        raise ServeConfigError(f"--serve-config {path}: no deployment named GenerationWorker in applications")
    return data


def worker_shape(args: argparse.Namespace, default_max_models: int, gpus: int) -> WorkerShape:
    """The deployment's shape from the flags and the config file (see the module's docstring)."""
    conf = read_serve_config(args.serve_config) if args.serve_config else {}
    known = {"name", "num_replicas", "autoscaling_config", "ray_actor_options", "max_models_per_replica",
             "max_ongoing_requests", "start_timeout_s", "silence_timeout_s"}
    unknown = sorted(set(conf) - known)
    if unknown:
        raise ServeConfigError(f"--serve-config: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    if conf.get("max_ongoing_requests") not in (None, 1):
        raise ServeConfigError("--serve-config: max_ongoing_requests must be 1 (one job per worker at a time)")
    shape = WorkerShape(max_models=int(conf.get("max_models_per_replica") or default_max_models),
                        start_timeout_s=float(conf.get("start_timeout_s") or 60),
                        silence_timeout_s=float(conf.get("silence_timeout_s") or 60))
    if shape.max_models < 1:
        raise ServeConfigError("--serve-config: max_models_per_replica must be at least 1")
    auto = conf.get("autoscaling_config")
    if auto is not None:
        if not isinstance(auto, dict):
            raise ServeConfigError("--serve-config: autoscaling_config must be a mapping")
        lo, hi = int(auto.get("min_replicas", 1)), int(auto.get("max_replicas", 1))
        if lo < 0 or hi < max(1, lo):
            raise ServeConfigError("--serve-config: autoscaling_config needs 0 <= min_replicas <= max_replicas, "
                                   "max_replicas >= 1")
        shape.autoscaling = dict(auto)
    opts = conf.get("ray_actor_options")
    if opts is not None and not isinstance(opts, dict):
        raise ServeConfigError("--serve-config: ray_actor_options must be a mapping")
    if args.ray_cpu_replicas:
        shape.num_replicas = int(args.ray_cpu_replicas)
        shape.actor_options = dict(opts or {"num_cpus": 1})
        shape.actor_options.pop("num_gpus", None)
    else:
        shape.actor_options = dict(opts if opts is not None else ({"num_gpus": 1} if gpus else {"num_cpus": 1}))
    if shape.autoscaling is None and shape.num_replicas is None:
        n = conf.get("num_replicas")
        shape.num_replicas = int(n) if n is not None else max(1, gpus)
    if shape.autoscaling is None and int(shape.num_replicas or 0) < 1:
        raise ServeConfigError("--serve-config: num_replicas must be at least 1")
    return shape


def check_flags(args: argparse.Namespace) -> None:
    """Fail at start (before the server opens) on --backend ray without Ray or with an unusable
    --serve-config; ServeConfigError says what to change."""
    import importlib.util
    if importlib.util.find_spec("ray") is None:
        raise ServeConfigError("--backend ray needs Ray: pip install '.[ray]'")
    worker_shape(args, 1, gpus=0)


def worker_args(args: argparse.Namespace) -> argparse.Namespace:
    """The flags a replica builds its services from: the front's, minus what only the front does."""
    w = argparse.Namespace(**vars(args))
    w.backend = "local"
    w.ray_address = None
    return w


def start_ray_backend(args: argparse.Namespace, outputs_dir: Path, default_max_models: int) -> RayExecutor:
    """An executor that becomes ready once the cluster runs the deployment (in a background thread:
    replicas take a while to import torch and build their services; jobs wait for them)."""
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        raise ServeConfigError("--backend ray needs Ray: pip install '.[ray]'") from None
    gpus = _visible_gpus() if not args.ray_address else 0
    shape = worker_shape(args, default_max_models, gpus)
    executor = RayExecutor(outputs_dir, shape.capacity, min_replicas=shape.min_replicas,
                           replica_wait_s=shape.start_timeout_s, event_timeout_s=shape.silence_timeout_s,
                           affinity=args.ray_routing != "any")
    threading.Thread(target=_connect, args=(args, shape, executor), name="ray-backend", daemon=True).start()
    return executor


def _connect(args: argparse.Namespace, shape: WorkerShape, executor: RayExecutor) -> None:
    try:
        import ray
        from ray import serve

        logging.getLogger("ray.serve").setLevel(args.log_level)  # Serve's lines in this process follow --log-level
        # replicas on this machine import the app from this checkout; other nodes need it installed
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}}
        if args.ray_address:
            ray.init(address=args.ray_address, namespace=NAMESPACE, runtime_env=env, ignore_reinit_error=True,
                     logging_level=args.log_level)
            # leaving a shared cluster: our deployment goes (its replicas hold GPUs), the cluster stays
            executor.on_close = lambda: (serve.delete(APP_NAME), ray.shutdown())
        elif not ray.is_initialized():
            cpus = max(int(shape.actor_options.get("num_cpus", 0) or 0) * shape.capacity + 1, os.cpu_count() or 1)
            ray.init(num_cpus=cpus, namespace=NAMESPACE, runtime_env=env, include_dashboard=False,
                     ignore_reinit_error=True, logging_level=args.log_level)
            executor.on_close = ray.shutdown  # the local cluster is this server's: it goes with it
        control = ray.remote(JobControl).options(name=CONTROL_ACTOR, namespace=NAMESPACE, get_if_exists=True,
                                                 num_cpus=0).remote()
        app = worker_deployment(shape.max_models).options(**shape.deployment_options()).bind(worker_args(args))
        log.info("Ray backend: starting the GenerationWorker deployment (%s)", shape.deployment_options())
        serve.start(proxy_location="Disabled")  # no Serve HTTP port: requests come only from this front
        deployed: dict[str, Any] = {}

        def deploy() -> None:  # blocks until the replicas run, which may be never (no node fits them)
            try:
                serve.run(app, name=APP_NAME, route_prefix=None, logging_config={"log_level": args.log_level})
                log.info("Ray backend ready: %d replica(s) running", running_replicas())
            except Exception as e:
                deployed["error"] = f"{type(e).__name__}: {e}"
                log.error("the GenerationWorker deployment failed: %s", deployed["error"])
        threading.Thread(target=deploy, name="ray-deploy", daemon=True).start()
        while "error" not in deployed:
            try:
                handle = serve.get_app_handle(APP_NAME)
                break
            except Exception:  # not registered yet
                threading.Event().wait(0.5)
        else:
            raise RuntimeError(deployed["error"])
        executor.connected(handle, control, running_replicas, lambda: why_no_replica(shape))
    except Exception as e:
        log.exception("the Ray backend could not start")
        executor.failed(f"{type(e).__name__}: {e}")
        return
    # a local cluster's processes die with the *thread* that started them (Linux parent-death signal):
    # this thread lives as long as the server
    threading.Event().wait()


def running_replicas() -> int:
    """Replicas of the worker deployment in the RUNNING state (0 when the app is gone)."""
    from ray import serve
    try:
        app = serve.status().applications.get(APP_NAME)
        dep = app.deployments.get("GenerationWorker") if app is not None else None
        return int((dep.replica_states or {}).get("RUNNING", 0)) if dep is not None else 0
    except Exception:
        return 0


def why_no_replica(shape: WorkerShape) -> str:
    """Why no worker replica runs: no live node has what one replica asks for, and/or Serve's own words."""
    import ray
    from ray import serve
    reasons = []
    ask = {"CPU": float(shape.actor_options.get("num_cpus", 1) or 0),
           "GPU": float(shape.actor_options.get("num_gpus", 0) or 0),
           **{k: float(v) for k, v in (shape.actor_options.get("resources") or {}).items()}}
    try:
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(all(node.get(k, 0) >= v for k, v in ask.items() if v) for node in nodes):
            have = ", ".join("{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(n.items())
                                             if k in ask or k in ("CPU", "GPU")) + "}" for n in nodes)
            wanted = ", ".join(f"{k}: {v:g}" for k, v in ask.items() if v)
            reasons.append(f"no node in the cluster has what a replica asks for ({wanted}); nodes: {have or 'none'}")
    except Exception:
        pass
    try:
        app = serve.status().applications.get(APP_NAME)
        dep = app.deployments.get("GenerationWorker") if app is not None else None
        if dep is not None and dep.message:
            reasons.append(str(dep.message))
    except Exception:
        pass
    return "; ".join(reasons)


def _visible_gpus() -> int:
    try:
        import torch
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0
