"""Hypernetwork training (A1111's "Train Hypernetwork").

The file's MLPs (one key and one value MLP per context width) are loaded trainable, in train mode
(their dropout active, as A1111 trains them), and hooked in front of the key/value projections of
every UNet cross-attention layer with the loader's formula ``context + mlp(context) * strength`` at
strength 1 (webui/networks/hypernetworks.py).  Unlike the loader's hook, the MLP keeps its own
float32 weights and the context is cast to them, so half-precision UNets do not turn the trained
weights into fp16.  AdamW with its default weight decay (0.01), as A1111; the optimizer state in
``<file>.optim`` is reused when its hash matches the file.  The text conditioning is frozen, so it is
encoded (and cached) by the model's PromptEncoder without gradients.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterator

import torch
from PIL import Image

from webui.networks.hypernetworks import HYPERNET_SUFFIXES, read_hypernetwork
from webui.training import hypernetwork_files as hf
from webui.training.logdir import TrainingLogDir
from webui.training.params import HypernetworkTrainParams
from webui.training.run import TrainOutcome, TrainRun
from webui.training.train_loop import option, refreeze, run_training, validate

log = logging.getLogger(__name__)

STRENGTH = 1.0  # A1111 trains and previews at full strength


def find_hypernetwork_file(run: TrainRun, name: str) -> Path:
    folder = Path(run.paths.hypernetwork_dir)
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if path.is_file() and path.stem == name and path.suffix.lower() in HYPERNET_SUFFIXES:
            return path
    raise ValueError(f"hypernetwork {name!r} not found in {folder}")


class HypernetworkTrainee:
    kind = "hypernetwork"
    grad_through_text = False
    snapshot_suffix = ".pt"

    def __init__(self, run: TrainRun, name: str) -> None:
        self.run, self.model = run, run.model
        self.final_path = find_hypernetwork_file(run, name)
        hn = read_hypernetwork(self.final_path)
        self.name = name
        self.info = hn.info
        try:
            self.step = int(hn.info.get("step") or 0)
        except (TypeError, ValueError):
            self.step = 0
        width = getattr(self.model.sd.unet.config, "cross_attention_dim", None)
        if isinstance(width, int) and width not in hn.modules:
            raise ValueError(f"hypernetwork {name} has modules for context widths {sorted(hn.modules)}; the loaded "
                             f"model uses {width}, so training it would change nothing")
        device = torch.device(self.model.policy.device)
        self.modules = {size: tuple(m.to(device, torch.float32) for m in pair) for size, pair in hn.modules.items()}
        self._handles: list[Any] = []
        self._active = False

    # ---- hooks
    def _hook(self, which: int) -> Any:
        def hook(_module: torch.nn.Module, args: tuple) -> tuple | None:
            if not args:
                return None
            x = args[0]
            pair = self.modules.get(int(x.shape[-1]))
            if pair is None:
                return None
            mlp = pair[which]
            dtype = next(mlp.parameters()).dtype
            h = x.to(dtype)
            return ((h + mlp(h) * STRENGTH).to(x.dtype),) + tuple(args[1:])
        return hook

    def attach(self) -> None:
        if self._handles:
            return
        for mod in self.model.sd.unet.modules():
            if getattr(mod, "is_cross_attention", False) and hasattr(mod, "to_k"):
                self._handles.append(mod.to_k.register_forward_pre_hook(self._hook(0)))
                self._handles.append(mod.to_v.register_forward_pre_hook(self._hook(1)))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # ---- what the loop asks
    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for pair in self.modules.values() for mlp in pair for p in mlp.parameters()]

    def make_optimizer(self) -> torch.optim.Optimizer:
        opt = torch.optim.AdamW(self.parameters(), lr=0.0)  # torch's default weight decay 0.01, as A1111
        saved = hf.load_optimizer_state(self.final_path)
        if saved is not None:
            name, state = saved
            try:
                opt.load_state_dict(state)
                log.info("Loaded the %s optimizer state of %s", name, self.final_path.name)
            except (ValueError, RuntimeError, KeyError) as e:
                log.warning("cannot resume the optimizer state of %s: %s", self.final_path.name, e)
        return opt

    def conditioning(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        clip_skip = int(option(self.run, "CLIP_stop_at_last_layers", 1))
        cond = self.model.encoder.encode(prompts, clip_skip=clip_skip)
        return cond.cross_attn, cond.pooled

    def step_parts(self) -> list[Any]:
        memory = self.model.memory
        return [memory.part_of(self.model.sd.unet)] if memory is not None else []

    def train_mode(self, on: bool) -> None:
        for pair in self.modules.values():
            for mlp in pair:
                mlp.train(on)
                mlp.requires_grad_(on)
        if on:
            self.attach()

    @contextlib.contextmanager
    def hidden(self) -> Iterator[None]:
        """Generation between steps sees the UNet without the hypernetwork being trained."""
        self.detach()
        try:
            yield
        finally:
            refreeze(self.model)
            self.train_mode(True)

    @contextlib.contextmanager
    def previewing(self) -> Iterator[None]:
        """The hooks stay on for the preview, the MLPs in eval mode (the loop sets it)."""
        self.attach()
        yield

    def save(self, path: Path, step: int, name: str, with_optimizer: torch.optim.Optimizer | None) -> Path:
        info = self.model.info
        hf.save_hypernetwork(path, self.modules, self.info, name=name, step=step, sd_checkpoint=info.shorthash,
                             sd_checkpoint_name=info.model_name, optimizer_name="AdamW",
                             optimizer_state=with_optimizer.state_dict() if with_optimizer is not None else None)
        return Path(path)

    def after_preview(self, image: Image.Image, infotext: str, step: int, log_dir: TrainingLogDir) -> None:
        return None

    def settings(self) -> dict[str, Any]:
        return {"hypernetwork_file": str(self.final_path), "layer_structure": self.info.get("layer_structure"),
                "activation_func": self.info.get("activation_func")}


def train_hypernetwork(run: TrainRun, params: HypernetworkTrainParams, *, seed: int | None = None) -> TrainOutcome:
    """A1111's Train Hypernetwork on ``run.model``: trains ``params.hypernetwork_name`` (a file in the
    hypernetwork folder) from its stored step to ``params.steps``; ``seed`` as in train_embedding.
    Raises ValueError for bad input (also "already trained beyond max steps")."""
    validate(params, params.save_hypernetwork_every, params.hypernetwork_name, "hypernetwork")
    trainee = HypernetworkTrainee(run, params.hypernetwork_name)
    try:
        return run_training(run, params, trainee, learn_rate=params.learn_rate,
                            save_every=params.save_hypernetwork_every, seed=seed)
    finally:
        trainee.detach()


__all__ = ["HypernetworkTrainee", "find_hypernetwork_file", "train_hypernetwork"]
