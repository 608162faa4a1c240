"""LoRA training's network and files: kohya's names, layout, metadata and hashes; the injected
adapters compute what our loader computes from the saved file; removal and the resumable state.

Tiny real-layout SD1 and SDXL checkpoints (tests/tiny_models.py).  The expected key lists below are
written out from the tiny architectures by hand (LDM indices for SDXL as kohya's SDXL UNet numbers
them), not derived from the code under test.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save as st_save

from tiny_models import make_tiny_checkpoint
from webui.hashes import legacy_model_hash, sha256_file
from webui.models.load import load_checkpoint
from webui.networks.lora_networks import LoraNetworks
from webui.prompts.extra_networks import ExtraNetworkParams
from webui.training.lora_adapters import LoraSpec, inject_lora
from webui.training.lora_files import (TrainingRecord, capture_rng_state, kohya_metadata, load_training_state,
                                       save_lora_file, save_training_state)

ATTN = [f"transformer_blocks_{{t}}_{a}_{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out_0")]
FF = ["transformer_blocks_{t}_ff_net_0_proj", "transformer_blocks_{t}_ff_net_2"]
TE = [f"text_model_encoder_layers_{{i}}_{p}" for p in ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj",
                                                        "self_attn_out_proj", "mlp_fc1", "mlp_fc2")]


def transformer_keys(blocks: list[str], depth: dict[str, int]) -> set[str]:
    out = set()
    for b in blocks:
        out |= {f"lora_unet_{b}_proj_in", f"lora_unet_{b}_proj_out"}
        for t in range(depth.get(b, 1)):
            out |= {f"lora_unet_{b}_" + leaf.format(t=t) for leaf in ATTN + FF}
    return out


def te_keys(prefix: str, layers: int) -> set[str]:
    return {prefix + leaf.format(i=i) for i in range(layers) for leaf in TE}


# SD1 tiny: down (CrossAttn, plain), up (plain, CrossAttn), one layer per block, depth 1; kohya keeps
# diffusers' paths.
SD1_BLOCKS = ["down_blocks_0_attentions_0", "mid_block_attentions_0", "up_blocks_1_attentions_0",
              "up_blocks_1_attentions_1"]
SD1_RESNETS = {  # resnet path → has a 1×1 shortcut
    "down_blocks_0_resnets_0": False, "down_blocks_1_resnets_0": True, "mid_block_resnets_0": False,
    "mid_block_resnets_1": False, "up_blocks_0_resnets_0": True, "up_blocks_0_resnets_1": True,
    "up_blocks_1_resnets_0": True, "up_blocks_1_resnets_1": True}
SD1_SAMPLERS = ["down_blocks_0_downsamplers_0_conv", "up_blocks_0_upsamplers_0_conv"]
# SDXL tiny: down (plain, CrossAttn depth 2), up (CrossAttn depth 2, plain); kohya's LDM names.
SDXL_BLOCKS = ["input_blocks_3_1", "middle_block_1", "output_blocks_0_1", "output_blocks_1_1"]
SDXL_RESNETS = {"input_blocks_1_0": False, "input_blocks_3_0": True, "middle_block_0": False, "middle_block_2": False,
                "output_blocks_0_0": True, "output_blocks_1_0": True, "output_blocks_2_0": True,
                "output_blocks_3_0": True}
SDXL_SAMPLERS = ["input_blocks_2_0_op", "output_blocks_1_2_conv"]


def expected_keys(family: str, locon: bool, te: bool) -> tuple[set[str], set[str]]:
    """(all module names, the 3×3 conv ones)."""
    if family == "sd1":
        keys = transformer_keys(SD1_BLOCKS, {})
        resnets, samplers, parts = SD1_RESNETS, SD1_SAMPLERS, ("conv1", "time_emb_proj", "conv2", "conv_shortcut")
        tes = te_keys("lora_te_", 2) if te else set()
    else:
        keys = transformer_keys(SDXL_BLOCKS, {b: 2 for b in SDXL_BLOCKS})
        resnets, samplers, parts = SDXL_RESNETS, SDXL_SAMPLERS, ("in_layers_2", "emb_layers_1", "out_layers_3",
                                                                 "skip_connection")
        tes = (te_keys("lora_te1_", 2) | te_keys("lora_te2_", 2)) if te else set()
    convs: set[str] = set()
    if locon:
        for r, shortcut in resnets.items():
            convs |= {f"lora_unet_{r}_{parts[0]}", f"lora_unet_{r}_{parts[2]}"}
            keys |= {f"lora_unet_{r}_{parts[1]}"} | ({f"lora_unet_{r}_{parts[3]}"} if shortcut else set())
        convs |= {f"lora_unet_{s}" for s in samplers}
    return keys | convs | tes, convs


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora_train")
    return {f: make_tiny_checkpoint(root / f"{f}.safetensors", f, seed=3) for f in ("sd1", "sdxl")}


def model_inputs(model, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 5, model.unet.config.cross_attention_dim, generator=g)
    kw = {}
    if model.family == "sdxl":
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(1, 32, generator=g), "time_ids": torch.randn(1, 6, generator=g)}
    ids = torch.randint(0, 49407, (1, 77), generator=g)
    return x, ctx, kw, ids


@torch.no_grad()
def outputs(model, inputs) -> list[torch.Tensor]:
    x, ctx, kw, ids = inputs
    return [model.unet(x, 10, ctx, **kw).sample] + [te(ids).last_hidden_state for te in model.text_encoders]


def base_weights(model) -> dict[str, torch.Tensor]:
    out = {f"unet.{k}": v.clone() for k, v in model.unet.state_dict().items()}
    for i, te in enumerate(model.text_encoders):
        out.update({f"te{i}.{k}": v.clone() for k, v in te.state_dict().items()})
    return out


def record(**kw) -> TrainingRecord:
    base = dict(output_name="shapes", learning_rate=1e-4, unet_lr=1e-4, text_encoder_lr=5e-5, max_train_steps=300,
                num_epochs=3, seed=42, noise_offset=0.05, min_snr_gamma=5.0, num_train_images=10,
                batch_size_per_device=2, resolution=(512, 512), dataset_dir="circles",
                tag_frequency={"circles": {"red circle": 4, "blue": 2}}, clip_skip=2, mixed_precision="fp16")
    base.update(kw)
    return TrainingRecord(**base)


CASES = [("sd1", LoraSpec(text_encoder=True)), ("sd1", LoraSpec(unet_target="locon", rank=3, alpha=2.0)),
         ("sdxl", LoraSpec(text_encoder=True)), ("sdxl", LoraSpec(unet_target="locon", rank=3, alpha=2.0, conv_rank=2,
                                                                  conv_alpha=1.0, text_encoder=True))]


@pytest.mark.parametrize("family,spec", CASES, ids=["sd1", "sd1-locon", "sdxl", "sdxl-locon-te"])
def test_saved_file_is_kohya_layout_and_our_loader_reproduces_the_adapters(ckpts, tmp_path: Path, family: str,
                                                                            spec: LoraSpec) -> None:
    model = load_checkpoint(ckpts[family])
    inputs = model_inputs(model)
    before, weights = outputs(model, inputs), base_weights(model)

    net = inject_lora(model, spec, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(outputs(model, inputs), before))  # lora_up starts at zero
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for a in net.adapters():
            a.lora_up.weight.normal_(0, 0.2, generator=g)
    trained = outputs(model, inputs)
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(trained[: 1 + spec.text_encoder], before))
    with net.disabled():  # a generation between training steps sees the base model
        assert all(torch.equal(a, b) for a, b in zip(outputs(model, inputs), before))

    lora_dir = tmp_path / "Lora"
    meta = kohya_metadata(net, model, record(), steps=120, epoch=2)
    path = save_lora_file(net, lora_dir / "shapes.safetensors", meta, precision="float32")

    # names: exactly kohya's for this family and target set
    keys, convs = expected_keys(family, spec.unet_target == "locon", spec.text_encoder)
    sd = load_file(str(path))
    assert set(sd) == {f"{k}.{p}" for k in keys for p in ("lora_down.weight", "lora_up.weight", "alpha")}
    conv_rank = spec.conv_rank or spec.rank
    for k in keys:
        down, up, alpha = sd[f"{k}.lora_down.weight"], sd[f"{k}.lora_up.weight"], sd[f"{k}.alpha"]
        rank = conv_rank if k in convs else spec.rank
        assert alpha.ndim == 0 and float(alpha) == ((spec.conv_alpha or spec.alpha) if k in convs else spec.alpha)
        assert down.shape[0] == rank and up.shape[1] == rank and down.dtype == up.dtype == torch.float32
        if k in convs:  # LoCon: the down conv keeps the 3×3 kernel, the up conv is 1×1
            assert down.shape[2:] == (3, 3) and up.shape[2:] == (1, 1)
        elif down.ndim == 4:
            assert down.shape[2:] == up.shape[2:] == (1, 1)

    # our loader applies the file and gets the injected model's outputs
    net.remove()
    after = outputs(model, inputs)
    assert all(torch.equal(a, b) for a, b in zip(after, before))  # removal: bit-exact
    assert all(torch.equal(v, weights[k]) for k, v in base_weights(model).items())  # base weights never written
    fresh = load_checkpoint(ckpts[family])
    loras = LoraNetworks([lora_dir])
    report = loras.activate(SimpleNamespace(sd=fresh), [ExtraNetworkParams(["shapes", "1"])])
    assert report.warnings == []
    assert len(loras.active_layers) == len(keys)
    for got, want in zip(outputs(fresh, inputs), trained):
        assert torch.allclose(got, want, atol=2e-5, rtol=1e-4), (got - want).abs().max()


def read_header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def test_metadata_hashes_and_fp16(ckpts, tmp_path: Path) -> None:
    model = load_checkpoint(ckpts["sd1"])
    net = inject_lora(model, LoraSpec(unet_target="locon", rank=16, alpha=8, text_encoder=True), seed=0)
    meta = kohya_metadata(net, model, record(), steps=120, epoch=2)
    big = save_lora_file(net, tmp_path / "big.safetensors", meta, precision="float32")
    assert big.stat().st_size > 0x110000  # the legacy hash reads 64 KiB at 1 MiB: make it non-trivial
    header, payload = read_header(big)
    stored = header["__metadata__"]
    assert all(isinstance(v, str) for v in stored.values())

    # sshs_model_hash: sha256 of the bytes after the header; sshs_legacy_hash: 64 KiB at 1 MiB of the
    # file serialised with only the ss_* metadata (kohya's precalculate_safetensors_hashes)
    assert stored["sshs_model_hash"] == hashlib.sha256(payload).hexdigest()
    ss_only = st_save(load_file(str(big)), {k: v for k, v in stored.items() if k.startswith("ss_")})
    assert stored["sshs_legacy_hash"] == hashlib.sha256(ss_only[0x100000:0x110000]).hexdigest()[:8]
    assert stored["sshs_legacy_hash"] != hashlib.sha256(b"").hexdigest()[:8]

    want = {
        "ss_output_name": "shapes", "ss_network_module": "networks.lora", "ss_network_dim": "16",
        "ss_network_alpha": "8.0", "ss_sd_model_name": "sd1.safetensors", "ss_base_model_version": "sd_v1",
        "ss_v2": "False", "ss_steps": "120", "ss_epoch": "2", "ss_num_epochs": "3", "ss_max_train_steps": "300",
        "ss_learning_rate": "0.0001", "ss_unet_lr": "0.0001", "ss_text_encoder_lr": "5e-05",
        "ss_optimizer": "torch.optim.adamw.AdamW", "ss_lr_scheduler": "constant", "ss_lr_warmup_steps": "0",
        "ss_gradient_accumulation_steps": "1", "ss_gradient_checkpointing": "False", "ss_mixed_precision": "fp16",
        "ss_clip_skip": "2", "ss_seed": "42", "ss_noise_offset": "0.05", "ss_min_snr_gamma": "5.0",
        "ss_num_train_images": "10", "ss_batch_size_per_device": "2", "ss_resolution": "(512, 512)",
        "ss_enable_bucket": "False", "ss_shuffle_caption": "False", "ss_caption_dropout_rate": "0.0",
        "ss_sd_model_hash": legacy_model_hash(ckpts["sd1"]), "ss_new_sd_model_hash": sha256_file(ckpts["sd1"]),
        "modelspec.sai_model_spec": "1.0.1", "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers", "modelspec.title": "shapes", "modelspec.resolution": "512x512",
        "modelspec.prediction_type": "epsilon", "modelspec.encoder_layer": "2",
    }
    assert {k: stored.get(k) for k in want} == want
    assert json.loads(stored["ss_network_args"]) == {"conv_dim": "16", "conv_alpha": "8"}
    assert json.loads(stored["ss_tag_frequency"]) == {"circles": {"red circle": 4, "blue": 2}}
    datasets = json.loads(stored["ss_datasets"])
    assert datasets[0]["tag_frequency"] == {"circles": {"red circle": 4, "blue": 2}}
    assert datasets[0]["subsets"][0]["image_dir"] == "circles" and datasets[0]["num_train_images"] == 10
    assert json.loads(stored["ss_dataset_dirs"]) == {"circles": {"n_repeats": 1, "img_count": 10}}
    for k in ("ss_training_started_at", "ss_training_finished_at"):
        float(stored[k])
    int(stored["ss_session_id"])
    assert len(stored["modelspec.date"]) == 19 and stored["modelspec.date"][10] == "T"

    # float16 (kohya's default save precision): every tensor, alpha too; the hash follows the bytes
    small = save_lora_file(net, tmp_path / "small.safetensors", meta)
    with safe_open(str(small), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
        stored16 = f.metadata()
    assert stored16["sshs_model_hash"] == hashlib.sha256(read_header(small)[1]).hexdigest()
    assert stored16["sshs_model_hash"] != stored["sshs_model_hash"]

    # SDXL and SD2-v names in ss_base_model_version / modelspec
    xl = load_checkpoint(ckpts["sdxl"])
    xmeta = kohya_metadata(inject_lora(xl, LoraSpec(), seed=0), xl, record(resolution=(1024, 1024)), steps=1, epoch=1)
    assert xmeta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert xmeta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert xmeta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert xmeta["ss_resolution"] == "(1024, 1024)" and xmeta["modelspec.resolution"] == "1024x1024"
    assert json.loads(xmeta["ss_network_args"]) == {}
    v2 = SimpleNamespace(family="sd2", prediction_type="v_prediction", path=tmp_path / "missing.safetensors")
    v2meta = kohya_metadata(net, v2, record(), steps=1, epoch=1)
    assert v2meta["ss_v2"] == "True" and v2meta["ss_base_model_version"] == "sd_v2_v"
    assert v2meta["modelspec.architecture"] == "stable-diffusion-v2-768-v/lora"
    assert "ss_sd_model_hash" not in v2meta  # no file to hash


def train_steps(model, net, opt, n: int, gen: torch.Generator) -> list[float]:
    losses = []
    for _ in range(n):
        x = torch.randn(2, 4, 8, 8, generator=gen)
        ids = torch.randint(0, 49407, (2, 77), generator=gen)
        t = torch.randint(0, 1000, (2,))  # the global RNG: restored with the state too
        ctx = model.text_encoders[0](ids).last_hidden_state
        ctx = torch.nn.functional.pad(ctx, (0, model.unet.config.cross_attention_dim - ctx.shape[-1]))
        loss = torch.nn.functional.mse_loss(model.unet(x, t, ctx).sample, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_training_state_round_trip_continues_bit_exactly(ckpts, tmp_path: Path) -> None:
    spec = LoraSpec(rank=4, alpha=2, text_encoder=True)

    def start():
        model = load_checkpoint(ckpts["sd1"])
        net = inject_lora(model, spec, seed=5)
        opt = torch.optim.AdamW(net.param_groups(1e-2, 5e-3), weight_decay=0.01)
        return model, net, opt

    torch.manual_seed(0)
    model, net, opt = start()
    weights = base_weights(model)
    gen = torch.Generator().manual_seed(1)
    train_steps(model, net, opt, 3, gen)
    state = save_training_state(tmp_path / "log" / "shapes-state.safetensors", net, opt, step=3, epoch=1,
                                settings={"name": "shapes", "rank": 4, "lr": "1e-2:100, 1e-3"},
                                rng=capture_rng_state({"noise": gen}), extra={"scaler": {"scale": 65536.0, "_growth_tracker": 0}})
    want_losses = train_steps(model, net, opt, 2, gen)
    want = {k: v.clone() for k, v in net.state_dict().items()}
    assert all(torch.equal(v, weights[k]) for k, v in base_weights(model).items())  # only the adapters learn

    torch.manual_seed(123)  # a different process state: the file must put everything back
    model2, net2, opt2 = start()
    gen2 = torch.Generator().manual_seed(999)
    loaded = load_training_state(state, net2, opt2, generators={"noise": gen2})
    assert (loaded.step, loaded.epoch) == (3, 1)
    assert loaded.settings == {"name": "shapes", "rank": 4, "lr": "1e-2:100, 1e-3"}
    assert loaded.extra == {"scaler": {"scale": 65536.0, "_growth_tracker": 0}}
    assert train_steps(model2, net2, opt2, 2, gen2) == want_losses
    got = net2.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)

    # no pickle in the file: tensors + a JSON header only
    with safe_open(str(state), "pt") as f:
        assert json.loads(f.metadata()["state"])["step"] == 3


def test_target_sets_sd2_text_encoder_and_seeded_init() -> None:
    from tiny_models import build_tiny_models
    from webui.training.lora_adapters import build_lora

    sd1 = build_tiny_models("sd1")
    attn = build_lora(sd1, LoraSpec(unet_target="attention"), seed=0)
    want = {f"lora_unet_{b}_" + leaf.format(t=0) for b in SD1_BLOCKS for leaf in ATTN}
    assert {a.lora_name for a in attn.adapters()} == want
    again = build_lora(sd1, LoraSpec(unet_target="attention"), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(attn.state_dict().values(), again.state_dict().values()))
    assert all(float(a.lora_up.weight.detach().abs().max()) == 0 and float(a.lora_down.weight.detach().abs().max()) > 0
               for a in attn.adapters())
    # one group per part; text-encoder adapters train only with a text-encoder rate
    te_net = build_lora(sd1, LoraSpec(text_encoder=True), seed=0)
    assert [g["lr"] for g in te_net.param_groups(1e-4, 5e-5)] == [1e-4, 5e-5]
    assert [g["lr"] for g in te_net.param_groups(1e-4, 0)] == [1e-4]

    # SD2: kohya's text encoder has one layer less (the last one is never used), so its files never
    # name it; the tiny SD2 encoder has two layers
    sd2 = build_tiny_models("sd2")
    net = build_lora(sd2, LoraSpec(text_encoder=True), seed=0)
    assert {a.lora_name for a in net.text_encoder_adapters} == te_keys("lora_te_", 1)
