"""Command-line flags, spelled as AUTOMATIC1111 spells them.

Only flags that do something are accepted; argparse rejects the rest with its usual error.
"""
from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="launch.py",
        description="Stable Diffusion web UI (AUTOMATIC1111-compatible flags).",
    )
    net = p.add_argument_group("server")
    net.add_argument("--port", type=int, default=None, help="port (default 7860, 7861 with --nowebui)")
    net.add_argument("--listen", action="store_true", help="bind 0.0.0.0 so other machines can connect")
    net.add_argument("--server-name", type=str, default=None, help="host name or address to bind")
    net.add_argument("--api", action="store_true",
                     help="serve the /sdapi/v1 API beside the UI (always on when bound to localhost)")
    net.add_argument("--nowebui", action="store_true", help="serve only the API, no UI")
    net.add_argument("--exit", action="store_true", help="set up, print the startup time and exit")
    net.add_argument("--api-server-stop", action="store_true",
                     help="allow POST /sdapi/v1/server-stop, server-restart and server-kill (A1111)")
    net.add_argument("--enable-insecure-extension-access", action="store_true",
                     help="allow installing/updating/enabling extensions when listening beyond localhost")
    net.add_argument("--allowed-path", action="append", type=Path, default=[], metavar="DIR",
                     help="when listening beyond localhost, requests may name folders inside DIR too (besides "
                          "the data dir); repeatable")
    net.add_argument("--max-upload-mb", type=int, default=50, metavar="N",
                     help="largest request body or upload in MB (larger ones get 413; default 50)")
    net.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                     help="also answer requests whose Host header is NAME (a reverse proxy's public name; "
                          "'*' for any); repeatable")
    net.add_argument("--cors-allow-origins", type=str, default=None, metavar="ORIGINS",
                     help="comma-separated origins (https://host:port) whose pages may call the server")
    net.add_argument("--cors-allow-origins-regex", type=str, default=None, metavar="REGEX",
                     help="origins matching this regular expression may call the server")
    net.add_argument("--tls-keyfile", type=Path, default=None, metavar="FILE", help="serve HTTPS with this key")
    net.add_argument("--tls-certfile", type=Path, default=None, metavar="FILE",
                     help="serve HTTPS with this certificate (with --tls-keyfile)")
    net.add_argument("--log-level", "--loglevel", dest="log_level", type=str.upper, default="INFO",
                     choices=LOG_LEVELS, help="how much the server logs to stderr (default INFO; DEBUG adds "
                                              "cache evictions and other details)")

    acc = p.add_argument_group("accounts (with any of these set, every route needs a log-in)")
    acc.add_argument("--gradio-auth", type=str, default=None, metavar="USER:PASS[,USER2:PASS2]",
                     help="accounts for the page (and the API unless --api-auth is given)")
    acc.add_argument("--gradio-auth-path", type=Path, default=None, metavar="FILE",
                     help="file of user:pass pairs, one or more per line (a password may contain ':')")
    acc.add_argument("--api-auth", type=str, default=None, metavar="USER:PASS[,USER2:PASS2]",
                     help="accounts for HTTP Basic on the API (default: the page's accounts)")
    acc.add_argument("--api-auth-path", type=Path, default=None, metavar="FILE",
                     help="file of user:pass pairs for the API")
    acc.add_argument("--admin", type=str, default=None, metavar="USER[,USER2]",
                     help="accounts that may change settings, manage extensions and stop others' jobs "
                          "(default: the first account)")

    scale = p.add_argument_group("scale-out (pip install .[ray]; see README \"Scaling out\")")
    scale.add_argument("--backend", choices=["local", "ray"], default="local",
                       help="where generations run: in this process (default) or on Ray Serve workers")
    scale.add_argument("--ray-address", type=str, default=None, metavar="auto|ray://HOST:10001",
                       help="join this Ray cluster (default: start a local one)")
    scale.add_argument("--serve-config", type=Path, default=None, metavar="FILE",
                       help="YAML/JSON with the worker deployment's replicas, autoscaling and actor options")
    scale.add_argument("--ray-cpu-replicas", type=int, default=0, metavar="N",
                       help="local Ray only: N CPU workers instead of one per visible GPU")
    scale.add_argument("--ray-routing", choices=["affinity", "any"], default="affinity",
                       help="send each job to a worker holding its checkpoint (default), or to any free one "
                            "(Serve's own choice; to measure what affinity saves: bench/bench_scale_out.py)")

    ui = p.add_argument_group("user interface")
    ui.add_argument("--hide-ui-dir-config", action="store_true",
                    help="keep server folders out of the page (no 📂 button, no folder paths shown)")
    ui.add_argument("--theme", choices=["light", "dark"], default=None,
                    help="open the page in light or dark mode (wins over the theme_mode option)")

    ext = p.add_argument_group("extensions")
    ext.add_argument("--skip-install", action="store_true", help="do not run extensions' install.py")
    ext.add_argument("--disable-all-extensions", action="store_true", help="load no extension")
    ext.add_argument("--disable-extra-extensions", action="store_true",
                     help="load only built-in extensions (none ship yet)")

    paths = p.add_argument_group("paths")
    paths.add_argument("--data-dir", type=Path, default=None,
                       help="where config.json, outputs/ and cache/ live (default: install dir)")
    paths.add_argument("--models-dir", type=Path, default=None, help="base models folder (default <data-dir>/models)")
    paths.add_argument("--ckpt-dir", type=Path, default=None, help="checkpoint folder (default <models-dir>/Stable-diffusion)")
    paths.add_argument("--ckpt", type=Path, default=None, help="checkpoint to load at start (also listed)")
    paths.add_argument("--controlnet-dir", type=Path, default=None,
                       help="ControlNet folder (default <models-dir>/ControlNet)")
    paths.add_argument("--vae-dir", type=Path, default=None, help="VAE folder (default <models-dir>/VAE)")
    paths.add_argument("--hypernetwork-dir", type=Path, default=None,
                       help="hypernetwork folder (default <models-dir>/hypernetworks)")
    paths.add_argument("--lora-dir", type=Path, default=None, help="LoRA folder (default <models-dir>/Lora)")
    paths.add_argument("--lyco-dir", type=Path, default=None, help="LyCORIS folder (default <models-dir>/LyCORIS)")
    paths.add_argument("--styles-file", type=Path, default=None, help="prompt styles csv (default <data-dir>/styles.csv)")
    paths.add_argument("--ui-config-file", type=Path, default=None,
                       help="saved defaults of the page's controls (default <data-dir>/ui-config.json)")
    paths.add_argument("--embeddings-dir", type=Path, default=None, help="textual inversion folder (default <models-dir>/embeddings)")
    paths.add_argument("--esrgan-models-path", type=Path, default=None,
                       help="ESRGAN upscaler folder (default <models-dir>/ESRGAN)")
    paths.add_argument("--realesrgan-models-path", type=Path, default=None,
                       help="Real-ESRGAN upscaler folder (default <models-dir>/RealESRGAN)")
    paths.add_argument("--swinir-models-path", type=Path, default=None,
                       help="SwinIR upscaler folder (default <models-dir>/SwinIR)")
    paths.add_argument("--dat-models-path", type=Path, default=None, help="DAT upscaler folder (default <models-dir>/DAT)")
    paths.add_argument("--gfpgan-models-path", type=Path, default=None, help="GFPGAN folder (default <models-dir>/GFPGAN)")
    paths.add_argument("--codeformer-models-path", type=Path, default=None,
                       help="CodeFormer folder (default <models-dir>/Codeformer)")

    dev = p.add_argument_group("device")
    dev.add_argument("--use-cpu", nargs="+", default=[], metavar="MODULE",
                     choices=["all", "sd", "interrogate", "gfpgan", "esrgan", "codeformer"],
                     help="run these on the CPU ('all' for everything)")
    dev.add_argument("--device-id", type=str, default=None, help="CUDA device index to use")
    dev.add_argument("--precision", choices=["full", "half", "autocast"], default="autocast",
                     help="full = fp32; half = fp16 everywhere; autocast = fp16 weights with autocast (default)")
    dev.add_argument("--no-half", action="store_true", help="keep the model in fp32")
    dev.add_argument("--no-half-vae", action="store_true", help="keep the VAE in fp32")
    dev.add_argument("--upcast-sampling", action="store_true",
                     help="fp16 weights, but the UNet's inputs and attention run in fp32 (no autocast)")
    dev.add_argument("--bf16", action="store_true",
                     help="use bfloat16 instead of float16 for half-precision weights (where the device supports it)")
    dev.add_argument("--disable-nan-check", action="store_true",
                     help="do not check decoded images for NaNs (a NaN VAE result is re-decoded in fp32 otherwise)")
    dev.add_argument("--skip-load-model-at-start", action="store_true", help="do not load a checkpoint at start")

    mem = p.add_argument_group("memory (webui.memory.manager; default: automatic placement by free VRAM)")
    mem.add_argument("--medvram", action="store_true",
                     help="only one of text encoder / UNet / VAE on the GPU at a time")
    mem.add_argument("--medvram-sdxl", action="store_true", help="--medvram for SDXL models only")
    mem.add_argument("--lowvram", action="store_true", help="--medvram, and the UNet streamed block by block")
    mem.add_argument("--highvram", action="store_true", help="keep every model part on the GPU, never offload")
    mem.add_argument("--gpu-only", action="store_true", help="same as --highvram")
    mem.add_argument("--vram-budget-mb", type=int, default=None, metavar="N",
                     help="plan as if the GPU had N MB (simulate a small card on a big one)")

    att = p.add_argument_group("attention")
    att.add_argument("--opt-sdp-attention", action="store_true",
                     help="torch scaled-dot-product attention (the default)")
    att.add_argument("--opt-sdp-no-mem-attention", action="store_true",
                     help="scaled-dot-product attention without the memory-efficient kernel (deterministic)")
    att.add_argument("--xformers", action="store_true", help="xformers attention when installed")
    att.add_argument("--force-enable-xformers", action="store_true", help="same as --xformers")
    return p


def memory_mode(args: argparse.Namespace) -> str:
    """The memory manager's mode from A1111's flags (the most frugal one given wins)."""
    if "all" in (getattr(args, "use_cpu", None) or []) or "sd" in (getattr(args, "use_cpu", None) or []):
        return "cpu"
    for flag, mode in (("lowvram", "lowvram"), ("medvram", "medvram"), ("medvram_sdxl", "medvram-sdxl"),
                       ("highvram", "highvram"), ("gpu_only", "gpu-only")):
        if getattr(args, flag, False):
            return mode
    return "auto"


def attention_backend(args: argparse.Namespace) -> str:
    if getattr(args, "xformers", False) or getattr(args, "force_enable_xformers", False):
        return "xformers"
    if getattr(args, "opt_sdp_no_mem_attention", False):
        return "sdp-no-mem"
    return "sdp"


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    models_dir: Path
    ckpt_dir: Path
    embeddings_dir: Path
    styles_file: Path
    lora_dir: Path
    hypernetwork_dir: Path
    vae_dir: Path
    controlnet_dir: Path
    lyco_dir: Path
    outputs_dir: Path
    cache_dir: Path
    config_file: Path
    builtin_models_dir: Path
    # model upscaler folders by kind (ESRGAN, RealESRGAN, SwinIR, DAT, HAT); empty = <models-dir>/<kind>
    upscaler_dirs: tuple[tuple[str, Path], ...] = ()

    def upscaler_folders(self) -> dict[str, Path]:
        given = dict(self.upscaler_dirs)
        return {k: given.get(k, self.models_dir / k) for k in ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT")}

    # face restorer folders (GFPGAN, CodeFormer) given by flags; empty = <models-dir>/GFPGAN, <models-dir>/Codeformer
    face_restorer_dirs: tuple[tuple[str, Path], ...] = ()

    def face_restorer_folders(self) -> dict[str, Path]:
        given = dict(self.face_restorer_dirs)
        return {k: given.get(k, self.models_dir / d) for k, d in (("CodeFormer", "Codeformer"), ("GFPGAN", "GFPGAN"))}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    if argv is None:
        import sys
        argv = sys.argv[1:]
    # A1111 also reads COMMANDLINE_ARGS; flags given on the command line come last and win.
    env_args = shlex.split(os.environ.get("COMMANDLINE_ARGS", ""))
    preloaded: list[str] = []
    preload_errors = _preload_extensions(parser, env_args + list(argv), preloaded)
    args = parser.parse_args(env_args + list(argv))
    args._extension_preload_errors = preload_errors  # underscore: not a flag (cmd-flags leaves it out)
    args._preloaded_extensions = preloaded
    if args.precision == "half" and (args.no_half or args.no_half_vae):
        parser.error("--precision half conflicts with --no-half/--no-half-vae")
    if args.vram_budget_mb is not None and args.vram_budget_mb < 64:
        parser.error("--vram-budget-mb must be at least 64")
    if args.max_upload_mb < 1:
        parser.error("--max-upload-mb must be at least 1")
    if bool(args.tls_keyfile) != bool(args.tls_certfile):
        parser.error("--tls-keyfile and --tls-certfile go together (give both, or neither for plain HTTP)")
    for flag, f in (("--tls-keyfile", args.tls_keyfile), ("--tls-certfile", args.tls_certfile)):
        if f is not None and not f.is_file():
            parser.error(f"{flag}: {f} is not a file")
    if args.tls_keyfile:
        import ssl
        try:  # a wrong pair fails here with its reason, not as a traceback once the server starts
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(args.tls_certfile, args.tls_keyfile)
        except (ssl.SSLError, OSError) as e:
            parser.error(f"--tls-certfile/--tls-keyfile: cannot use this pair: {e}")
    if args.cors_allow_origins_regex:
        import re
        try:
            re.compile(args.cors_allow_origins_regex)
        except re.error as e:
            parser.error(f"--cors-allow-origins-regex: {e}")
    return args


def _preload_extensions(parser: argparse.ArgumentParser, argv: list[str], ran: list[str]) -> dict[str, str]:
    """Extensions' preload.py add their flags before the real parse (A1111), so a flag an enabled
    extension adds is accepted at launch. The data dir and the enable state come from a first,
    lenient parse and config.json."""
    import json

    from webui.extensions.loader import run_preloads

    known, _ = parser.parse_known_args(argv)
    data_dir = (known.data_dir or PROJECT_ROOT).resolve()
    config: dict = {}
    try:
        loaded = json.loads((data_dir / "config.json").read_text(encoding="utf-8"))
        config = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    disable_all = ("all" if known.disable_all_extensions else "extra" if known.disable_extra_extensions
                   else str(config.get("disable_all_extensions") or "none"))
    disabled = [str(x) for x in config.get("disabled_extensions") or [] if isinstance(x, str)]
    return run_preloads(parser, data_dir / "extensions", disabled, disable_all, ran)


LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def network_exposure(args: argparse.Namespace | None) -> list[str]:
    """The flags that make the server reachable beyond this machine (empty: localhost only). What
    runs code or touches server paths is refused or confined when this is not empty."""
    if args is None:
        return []
    reasons = []
    if getattr(args, "listen", False):
        reasons.append("--listen")
    name = getattr(args, "server_name", None)
    if name and str(name).strip().lower() not in LOOPBACK:
        reasons.append(f"--server-name {name}")
    for flag in ("share", "ngrok"):
        if getattr(args, flag, None):
            reasons.append(f"--{flag}")
    return reasons


def resolve_paths(args: argparse.Namespace) -> Paths:
    data_dir = (args.data_dir or PROJECT_ROOT).resolve()
    models_dir = (args.models_dir or data_dir / "models").resolve()
    return Paths(
        data_dir=data_dir,
        models_dir=models_dir,
        ckpt_dir=(args.ckpt_dir or models_dir / "Stable-diffusion").resolve(),
        embeddings_dir=(args.embeddings_dir or models_dir / "embeddings").resolve(),
        styles_file=(getattr(args, "styles_file", None) or data_dir / "styles.csv").resolve(),
        lora_dir=(getattr(args, "lora_dir", None) or models_dir / "Lora").resolve(),
        hypernetwork_dir=(getattr(args, "hypernetwork_dir", None) or models_dir / "hypernetworks").resolve(),
        vae_dir=(getattr(args, "vae_dir", None) or models_dir / "VAE").resolve(),
        controlnet_dir=(getattr(args, "controlnet_dir", None) or models_dir / "ControlNet").resolve(),
        lyco_dir=(getattr(args, "lyco_dir", None) or models_dir / "LyCORIS").resolve(),
        outputs_dir=data_dir / "outputs",
        cache_dir=data_dir / "cache",
        config_file=data_dir / "config.json",
        builtin_models_dir=Path(__file__).resolve().parent / "builtin_models",
        upscaler_dirs=tuple((kind, Path(v).resolve()) for kind, flag in (
            ("ESRGAN", "esrgan_models_path"), ("RealESRGAN", "realesrgan_models_path"),
            ("SwinIR", "swinir_models_path"), ("DAT", "dat_models_path")) if (v := getattr(args, flag, None))),
        face_restorer_dirs=tuple((kind, Path(v).resolve()) for kind, flag in (
            ("GFPGAN", "gfpgan_models_path"), ("CodeFormer", "codeformer_models_path"))
            if (v := getattr(args, flag, None))),
    )


def server_host(args: argparse.Namespace) -> str:
    if args.server_name:
        return args.server_name
    return "0.0.0.0" if args.listen else "127.0.0.1"


def server_port(args: argparse.Namespace) -> int:
    if args.port is not None:
        return args.port
    return 7861 if args.nowebui else 7860


def api_enabled(args: argparse.Namespace) -> bool:
    host = server_host(args)
    return bool(args.api or args.nowebui or host in ("127.0.0.1", "localhost", "::1"))


def cmd_flags(args: argparse.Namespace) -> dict[str, object]:
    """vars(args) made JSON-friendly, for GET /sdapi/v1/cmd-flags."""
    out: dict[str, object] = {}
    for k, v in vars(args).items():
        if k.startswith("_"):
            continue
        out[k] = str(v) if isinstance(v, Path) else v
    return out
