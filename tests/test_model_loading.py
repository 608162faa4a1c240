"""Single-file checkpoint loading: tokenizer, safe file reading, detection, conversion, writer."""

from __future__ import annotations

import functools
import json
import os
import random
import socket
import struct
import sys
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import load_file, save_file

try:  # works whether or not tests/ is a package
    from tests.tiny_models import TINY_UNET, TINY_VAE, build_tiny_models, make_malicious_ckpt, make_tiny_checkpoint
except ImportError:
    from tiny_models import TINY_UNET, TINY_VAE, build_tiny_models, make_malicious_ckpt, make_tiny_checkpoint
from webui.models.detect import UnsupportedModelError, detect_checkpoint
from webui.models.file_io import ModelFileError, load_state_dict, read_key_shapes, read_safetensors_header
from webui.models.ldm_writer import ldm_state_dict
from webui.models.load import (
    build_text_encoders, build_unet, build_vae, ldm_alphas_cumprod, load_checkpoint, load_diffusers_folder,
)
from webui.models.tokenizers import load_clip_tokenizer

ROOT = Path(__file__).resolve().parent.parent


@functools.lru_cache(maxsize=None)
def _orig(family: str, inpainting: bool = False):
    """The exact models the ``ckpts`` files were written from (read-only use in tests)."""
    return build_tiny_models(family, inpainting=inpainting)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails loudly (real sockets, nothing mocked in torch/fs)."""
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    return {
        "sd1": make_tiny_checkpoint(d / "sd1.safetensors", "sd1"),
        "sd2": make_tiny_checkpoint(d / "sd2.safetensors", "sd2"),
        "sd2v": make_tiny_checkpoint(d / "sd2v.safetensors", "sd2", prediction_type="v_prediction"),
        "sdxl": make_tiny_checkpoint(d / "sdxl.safetensors", "sdxl"),
        "sd1_inpaint": make_tiny_checkpoint(d / "sd1_inpaint.safetensors", "sd1", inpainting=True),
        "sdxl_inpaint": make_tiny_checkpoint(d / "sdxl_inpaint.safetensors", "sdxl", inpainting=True),
    }


# --- tokenizer -----------------------------------------------------------------------------------

def test_tokenizer_matches_openai_clip():
    tok = load_clip_tokenizer(pad_with_eos=True)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408 and tok.model_max_length == 77 and tok.pad_token_id == 49407
    padded = tok("a cat", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[-1] == 49407


def test_open_clip_tokenizer_pads_with_bang_but_keeps_bpe():
    tok = load_clip_tokenizer(pad_with_eos=False)
    assert tok.pad_token_id == 0
    ids = tok("a cat!!", padding="max_length", max_length=10).input_ids
    assert ids == [49406, 320, 2368, 748, 49407, 0, 0, 0, 0, 0]  # "!!" stays one BPE token, as OpenCLIP


def test_tokenizer_build_script_is_reproducible(tmp_path):
    """tools/build_clip_tokenizer.py regenerates the shipped files byte for byte.

    Its real input is OpenAI's bpe_simple_vocab_16e6.txt.gz (inside an open_clip wheel), which a fresh
    machine does not have, so the test rebuilds that input: the file is a "#version" line followed by
    the merge list, of which CLIP uses the first 48894 (the shipped merges.txt).  Extra merge lines are
    appended to check the cut, and the gzip goes inside a wheel-like zip as in real use.  vocab.json
    (byte table order, "</w>" forms, merged tokens, special tokens) is derived, not copied.
    """
    import gzip
    import zipfile

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_clip_tokenizer as b
    finally:
        sys.path.pop(0)
    shipped = ROOT / "webui/models/tokenizer"
    merges = shipped.joinpath("merges.txt").read_text(encoding="utf-8").split("\n")[1:-1]
    assert len(merges) == b.N_MERGES
    text = "\n".join(["#version: 0.2", *merges, "x y", "xy z"]) + "\n"
    wheel = tmp_path / "open_clip_torch-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(b.BPE_MEMBER, gzip.compress(text.encode("utf-8")))
    out = tmp_path / "out"
    b.write(*b.build(b.read_bpe_text(wheel)), out)
    for name in ("vocab.json", "merges.txt"):
        assert (out / name).read_bytes() == (shipped / name).read_bytes(), name


# --- detection -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,family,inpainting,pred", [
    ("sd1", "sd1", False, "epsilon"), ("sd2", "sd2", False, None), ("sd2v", "sd2", False, None),
    ("sdxl", "sdxl", False, "epsilon"), ("sd1_inpaint", "sd1", True, "epsilon"),
    ("sdxl_inpaint", "sdxl", True, "epsilon"),
])
def test_detect_tiny_families(ckpts, name, family, inpainting, pred):
    det = detect_checkpoint(*read_key_shapes(ckpts[name]))
    assert (det.family, det.inpainting, det.prediction_type) == (family, inpainting, pred)
    ref = TINY_UNET[family]
    u = det.unet_config
    assert u["in_channels"] == (9 if inpainting else 4) and u["out_channels"] == 4
    for k in ("block_out_channels", "down_block_types", "up_block_types", "attention_head_dim"):
        want = ref[k]
        assert u[k] == (list(want) if isinstance(want, tuple) else want), k
    assert u["layers_per_block"] == 1 and u["cross_attention_dim"] == ref["cross_attention_dim"]
    assert u["use_linear_projection"] is (family != "sd1")
    assert det.vae_config["block_out_channels"] == list(TINY_VAE["block_out_channels"])
    assert det.vae_config["latent_channels"] == 4
    te = det.text_encoder_configs
    assert len(te) == (2 if family == "sdxl" else 1)
    assert te[0]["hidden_act"] == ("gelu" if family == "sd2" else "quick_gelu")
    assert te[0]["num_hidden_layers"] == 2 and te[0]["vocab_size"] == 49408
    assert te[0]["hidden_size"] == (48 if family == "sd2" else 32) and te[0]["max_position_embeddings"] == 77
    if family == "sdxl":
        assert u["addition_embed_type"] == "text_time" and u["addition_time_embed_dim"] == 256
        assert u["projection_class_embeddings_input_dim"] == 32 + 6 * 256
        assert u["transformer_layers_per_block"] == [1, 2]  # read per level (SDXL full size: [1, 2, 10])
        assert te[1]["hidden_act"] == "gelu" and te[1]["hidden_size"] == 48 and te[1]["projection_dim"] == 32
        assert (det.scaling_factor, det.default_size) == (0.13025, 1024)
    else:
        assert det.scaling_factor == 0.18215


def test_detect_prediction_type_and_resolution_from_metadata(ckpts):
    shapes, _ = read_key_shapes(ckpts["sd2"])
    det = detect_checkpoint(shapes, {"modelspec.prediction_type": "v"})
    assert det.prediction_type == "v_prediction" and det.default_size == 768
    assert detect_checkpoint(shapes, {"prediction_type": "epsilon"}).prediction_type == "epsilon"
    sd1_shapes, _ = read_key_shapes(ckpts["sd1"])
    assert detect_checkpoint(sd1_shapes, {"modelspec.prediction_type": "v_prediction"}).prediction_type == "v_prediction"
    assert detect_checkpoint(sd1_shapes, {"modelspec.resolution": "768x768"}).default_size == 768


_CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               hidden_act="quick_gelu", vocab_size=49408, max_position_embeddings=77)
_FULL_VAE = dict(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                 down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
_SD_DOWN = ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
_SD_UP = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
FULL_SIZE = {  # the published diffusers configs of SD1.5, SD2.1 and SDXL base
    "sd1": (dict(block_out_channels=[320, 640, 1280, 1280], down_block_types=_SD_DOWN, up_block_types=_SD_UP,
                 layers_per_block=2, cross_attention_dim=768, attention_head_dim=8), [_CLIP_L]),
    "sd2": (dict(block_out_channels=[320, 640, 1280, 1280], down_block_types=_SD_DOWN, up_block_types=_SD_UP,
                 layers_per_block=2, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
                 use_linear_projection=True, upcast_attention=True),
            [dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                  hidden_act="gelu", vocab_size=49408, max_position_embeddings=77)]),
    "sdxl": (dict(block_out_channels=[320, 640, 1280], down_block_types=["DownBlock2D"] + ["CrossAttnDownBlock2D"] * 2,
                  up_block_types=["CrossAttnUpBlock2D"] * 2 + ["UpBlock2D"], layers_per_block=2,
                  cross_attention_dim=2048, attention_head_dim=[5, 10, 20], use_linear_projection=True,
                  transformer_layers_per_block=[1, 2, 10], addition_embed_type="text_time",
                  addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816),
             [_CLIP_L, dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                            hidden_act="gelu", vocab_size=49408, max_position_embeddings=77, projection_dim=1280)]),
}


REAL_KEYS = {  # as listed in real sd-v1-5 / sd-v2-1 / sd_xl_base_1.0 files
    "sd1": ["model.diffusion_model.output_blocks.11.0.skip_connection.weight",
            "model.diffusion_model.output_blocks.2.1.conv.weight", "model.diffusion_model.output_blocks.5.2.conv.weight",
            "model.diffusion_model.input_blocks.3.0.op.weight", "model.diffusion_model.input_blocks.11.0.out_layers.3.weight",
            "model.diffusion_model.middle_block.2.emb_layers.1.weight", "first_stage_model.decoder.up.3.upsample.conv.weight",
            "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight", "first_stage_model.post_quant_conv.weight",
            "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight",
            "cond_stage_model.transformer.text_model.final_layer_norm.bias"],
    "sd2": ["model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
            "cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight",
            "cond_stage_model.model.token_embedding.weight", "cond_stage_model.model.positional_embedding",
            "cond_stage_model.model.ln_final.weight", "cond_stage_model.model.logit_scale"],
    "sdxl": ["model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight",
             "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight",
             "model.diffusion_model.middle_block.1.transformer_blocks.9.ff.net.2.weight",
             "model.diffusion_model.output_blocks.2.2.conv.weight", "model.diffusion_model.output_blocks.5.2.conv.weight",
             "model.diffusion_model.label_emb.0.2.weight",
             "conditioner.embedders.1.model.transformer.resblocks.31.mlp.c_proj.bias",
             "conditioner.embedders.1.model.text_projection", "conditioner.embedders.1.model.logit_scale",
             "conditioner.embedders.0.transformer.text_model.embeddings.position_ids"],
}


def _meta_full_size(family: str, in_channels: int = 4) -> dict[str, torch.Tensor]:
    """A full-size real-layout state dict made of meta tensors (shapes only, no memory)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    ucfg, tcfgs = FULL_SIZE[family]
    with init_empty_weights():
        unet = UNet2DConditionModel(**ucfg, in_channels=in_channels)
        vae = AutoencoderKL(**_FULL_VAE)
        tes = [CLIPTextModel(CLIPTextConfig(**tcfgs[0]))]
        if family == "sdxl":
            tes.append(CLIPTextModelWithProjection(CLIPTextConfig(**tcfgs[1])))
    sd = ldm_state_dict(unet=unet, vae=vae, text_encoders=tes, family=family)
    if family == "sd2":  # real SD2 files carry a 24th OpenCLIP layer that SD2 skips (penultimate output)
        for k in [k for k in sd if ".resblocks.22." in k]:
            sd[k.replace(".resblocks.22.", ".resblocks.23.")] = sd[k]
    return sd


@pytest.mark.parametrize("family,diffusers_type,inpaint_type", [
    ("sd1", "v1", "inpainting"), ("sd2", "v2", "inpainting_v2"), ("sdxl", "xl_base", "xl_inpaint"),
])
def test_full_size_layout_agrees_with_diffusers_and_detection(family, diffusers_type, inpaint_type):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    sd = _meta_full_size(family)
    assert infer_diffusers_model_type(sd) == diffusers_type  # diffusers' own key/shape rules
    for key in REAL_KEYS[family]:
        assert key in sd, key
    assert infer_diffusers_model_type(_meta_full_size(family, 9)) == inpaint_type
    det = detect_checkpoint({k: tuple(v.shape) for k, v in sd.items()}, {})
    ucfg, tcfgs = FULL_SIZE[family]
    for k, v in ucfg.items():
        assert det.unet_config[k] == v, k
    for k, v in _FULL_VAE.items():
        assert det.vae_config[k] == v, k
    for want, got in zip(tcfgs, det.text_encoder_configs):
        assert {k: got[k] for k in want} == want
    # The whole conversion + strict assignment runs on the full-size layout (meta tensors, no RAM).
    p = Path(f"full_{family}.safetensors")
    unet, vae, tes = build_unet(det, sd, p), build_vae(det, sd, p), build_text_encoders(det, sd, p)
    assert list(unet.config.block_out_channels) == ucfg["block_out_channels"]
    assert len(tes) == len(tcfgs) and vae.config.latent_channels == 4


# --- writer --------------------------------------------------------------------------------------

def test_writer_uses_real_checkpoint_key_names(ckpts):
    sd1 = read_safetensors_header(ckpts["sd1"])[0]
    for key in ["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
                "model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.out.2.weight",
                "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
                "model.diffusion_model.input_blocks.2.0.op.weight", "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.output_blocks.1.0.skip_connection.weight",
                "model.diffusion_model.output_blocks.1.1.conv.weight", "model.diffusion_model.time_embed.0.weight",
                "first_stage_model.encoder.down.0.block.0.conv1.weight", "first_stage_model.quant_conv.weight",
                "first_stage_model.decoder.up.3.upsample.conv.weight", "first_stage_model.encoder.mid.block_1.norm1.weight",
                "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
                "cond_stage_model.transformer.text_model.embeddings.position_ids"]:
        assert key in sd1, key
    assert sd1["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)  # conv-shaped
    assert sd1["first_stage_model.decoder.mid.attn_1.proj_out.weight"].shape == (32, 32, 1, 1)
    assert sd1["cond_stage_model.transformer.text_model.embeddings.position_ids"].dtype == "I64"

    sd2 = read_safetensors_header(ckpts["sd2"])[0]
    assert sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (144, 48)  # fused qkv
    for key in ["cond_stage_model.model.token_embedding.weight", "cond_stage_model.model.positional_embedding",
                "cond_stage_model.model.ln_final.weight", "cond_stage_model.model.transformer.resblocks.1.mlp.c_fc.weight"]:
        assert key in sd2, key

    xl = read_safetensors_header(ckpts["sdxl"])[0]
    for key in ["conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
                "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
                "conditioner.embedders.1.model.text_projection", "conditioner.embedders.1.model.logit_scale",
                "model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.label_emb.0.2.weight",
                "model.diffusion_model.input_blocks.3.1.transformer_blocks.1.attn2.to_k.weight",
                "model.diffusion_model.output_blocks.1.2.conv.weight"]:
        assert key in xl, key
    assert xl["conditioner.embedders.1.model.text_projection"].shape == (48, 32)  # [width, embed_dim]
    assert not [k for k in xl if not k.startswith(("model.diffusion_model.", "first_stage_model.", "conditioner."))]


def test_writer_text_projection_is_openclip_layout():
    m = build_tiny_models("sdxl", round_to=None)
    sd = ldm_state_dict(unet=m.unet, vae=m.vae, text_encoders=m.text_encoders, family="sdxl")
    w = m.text_encoders[1].text_projection.weight
    assert torch.equal(sd["conditioner.embedders.1.model.text_projection"], w.T)  # x @ P == Linear(x)


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_diffusers_own_single_file_loader_reads_writer_output(ckpts, family, tmp_path, no_network):
    """Independent check of the layout: diffusers' from_single_file (given a local config folder)
    reconstructs exactly the models the file was written from."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    m = _orig(family)
    root = tmp_path / "config"
    m.unet.save_pretrained(root / "unet")
    m.vae.save_pretrained(root / "vae")
    EulerDiscreteScheduler(beta_schedule="scaled_linear", steps_offset=1).save_pretrained(root / "scheduler")
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    index = {"_class_name": cls.__name__, "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    parts = [("text_encoder", "tokenizer", "CLIPTextModel", family != "sd2")]
    if family == "sdxl":
        parts.append(("text_encoder_2", "tokenizer_2", "CLIPTextModelWithProjection", False))
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None], requires_safety_checker=False)
    for (te_name, tok_name, te_cls, pad_eos), te in zip(parts, m.text_encoders):
        te.save_pretrained(root / te_name)
        load_clip_tokenizer(pad_eos).save_pretrained(root / tok_name)
        index[te_name], index[tok_name] = ["transformers", te_cls], ["transformers", "CLIPTokenizer"]
    (root / "model_index.json").write_text(json.dumps(index))
    extra = {} if family == "sdxl" else {"safety_checker": None}
    pipe = cls.from_single_file(str(ckpts[family]), config=str(root), local_files_only=True, **extra)
    loaded = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
    for a, b in [(m.unet, pipe.unet), (m.vae, pipe.vae), *zip(m.text_encoders, loaded)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k].float()) for k in sa), type(a).__name__


# --- loading -------------------------------------------------------------------------------------

def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    bad = [k for k in sa if sa[k].dtype != sb[k].dtype or not torch.equal(sa[k], sb[k])]
    assert not bad, bad[:5]


@torch.no_grad()
def _assert_same_outputs(orig, loaded, family: str) -> None:
    g = torch.Generator().manual_seed(1)
    u0, u1 = orig.unet, loaded.unet
    x = torch.randn(1, u0.config.in_channels, 8, 8, generator=g)
    ctx = torch.randn(1, 77, u0.config.cross_attention_dim, generator=g)
    extra = {}
    if family == "sdxl":
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, 32, generator=g),
                                       "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}}
    t = torch.tensor([500])
    assert torch.equal(u0(x, t, ctx, **extra).sample, u1(x, t, ctx, **extra).sample)
    img = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    lat0, lat1 = orig.vae.encode(img).latent_dist.mean, loaded.vae.encode(img).latent_dist.mean
    assert lat0.shape == (1, 4, 8, 8) and torch.equal(lat0, lat1)  # 8x downscale, 4 latent channels
    assert torch.equal(orig.vae.decode(lat0).sample, loaded.vae.decode(lat0).sample)
    for te0, te1, tok in zip(orig.text_encoders, loaded.text_encoders, loaded.tokenizers):
        ids = tok(["a photo of a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
        o0, o1 = te0(ids, output_hidden_states=True), te1(ids, output_hidden_states=True)
        assert torch.equal(o0.last_hidden_state, o1.last_hidden_state)
        assert torch.equal(o0.hidden_states[-2], o1.hidden_states[-2])
        if hasattr(o0, "text_embeds"):
            assert torch.equal(o0.text_embeds, o1.text_embeds)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_load_roundtrip_is_bit_exact_and_offline(ckpts, family, no_network):
    model = load_checkpoint(ckpts[family])
    orig = _orig(family)
    assert model.family == family and model.scaling_factor == orig.vae.config.scaling_factor
    assert len(model.text_encoders) == len(model.tokenizers) == (2 if family == "sdxl" else 1)
    assert model.latent_channels == 4 and model.vae_scale_factor == 8
    assert model.tokenizers[-1].pad_token_id == (49407 if family == "sd1" else 0)
    for a, b in [(orig.unet, model.unet), (orig.vae, model.vae), *zip(orig.text_encoders, model.text_encoders)]:
        _assert_same_weights(a, b)
        assert not b.training and not any(p.requires_grad for p in b.parameters())
        assert not any(p.is_meta for p in b.parameters()) and not any(x.is_meta for x in b.buffers())
    _assert_same_outputs(orig, model, family)


def test_load_ckpt_pickle_and_fp16(tmp_path, no_network):
    path = make_tiny_checkpoint(tmp_path / "tiny.ckpt", "sd1", fmt="ckpt")
    model = load_checkpoint(path)
    _assert_same_weights(_orig("sd1").unet, model.unet)
    half = load_checkpoint(path, dtype=torch.float16)
    assert next(half.unet.parameters()).dtype == torch.float16
    assert half.text_encoders[0].dtype == torch.float16


def test_sd2_prediction_type_runtime_test_and_yaml(ckpts, tmp_path):
    v = load_checkpoint(ckpts["sd2v"])
    assert v.prediction_type == "v_prediction" and v.default_size == 768 and "v-prediction" in v.description
    eps = load_checkpoint(ckpts["sd2"])
    assert eps.prediction_type == "epsilon" and eps.default_size == 512
    # A <stem>.yaml beside the file wins over the runtime test, as in A1111.
    path = tmp_path / "custom.safetensors"
    path.write_bytes(ckpts["sd2"].read_bytes())
    path.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert load_checkpoint(path).prediction_type == "v_prediction"
    # Declared metadata wins over everything (these weights would test as epsilon).
    declared = make_tiny_checkpoint(tmp_path / "declared.safetensors", "sd2",
                                    metadata={"modelspec.prediction_type": "v"})
    m = load_checkpoint(declared)
    assert m.prediction_type == "v_prediction" and m.default_size == 768
    assert m.metadata["modelspec.prediction_type"] == "v"


def test_inpainting_models_load(ckpts):
    for name, family in (("sd1_inpaint", "sd1"), ("sdxl_inpaint", "sdxl")):
        m = load_checkpoint(ckpts[name])
        assert m.inpainting and m.unet.config.in_channels == 9 and "inpainting" in m.description
        _assert_same_weights(_orig(family, True).unet, m.unet)


def test_alphas_cumprod_matches_ldm_schedule(ckpts):
    ac = load_checkpoint(ckpts["sd1"]).alphas_cumprod
    assert ac.dtype == torch.float32 and ac.shape == (1000,)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    assert torch.equal(ac, torch.cumprod(1 - betas, 0).float())
    assert abs(ac[0].item() - 0.99915) < 1e-7
    from diffusers import DDPMScheduler  # computes the same schedule in float32
    ref = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    assert torch.allclose(ac, ref, atol=1e-6)
    assert torch.equal(ldm_alphas_cumprod(), ac)


def test_schedule_stored_in_file_is_used_in_float32(ckpts, tmp_path):
    """Like A1111 (the buffer is loaded from the file), e.g. for zero-terminal-SNR fine-tunes."""
    sd = load_file(ckpts["sd1"])
    custom = ldm_alphas_cumprod().double().sqrt().float()  # any distinct schedule
    custom[-1] = 4.1e-9  # not representable in float16
    sd["alphas_cumprod"] = custom
    save_file(sd, tmp_path / "ztsnr.safetensors")
    for path in (tmp_path / "ztsnr.safetensors", tmp_path / "ztsnr.ckpt"):
        if path.suffix == ".ckpt":
            torch.save({"state_dict": sd}, path)
        m = load_checkpoint(path, dtype=torch.float16)
        assert m.alphas_cumprod.dtype == torch.float32 and torch.equal(m.alphas_cumprod, custom)


def test_legacy_sd1_text_encoder_keys(ckpts, tmp_path):
    sd = load_file(ckpts["sd1"])
    pre = "cond_stage_model.transformer."
    legacy = {k.replace(pre + "text_model.", pre): v for k, v in sd.items()}
    assert pre + "embeddings.token_embedding.weight" in legacy
    save_file(legacy, tmp_path / "old.safetensors")
    m = load_checkpoint(tmp_path / "old.safetensors")
    _assert_same_weights(_orig("sd1").text_encoders[0], m.text_encoders[0])


def test_load_diffusers_folder(tmp_path, no_network):
    m = _orig("sdxl")
    root = tmp_path / "tiny-sdxl"
    m.unet.save_pretrained(root / "unet")
    m.vae.save_pretrained(root / "vae")
    m.text_encoders[0].save_pretrained(root / "text_encoder")
    m.text_encoders[1].save_pretrained(root / "text_encoder_2")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": "v_prediction"}))
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}))
    loaded = load_diffusers_folder(root)
    assert loaded.family == "sdxl" and loaded.prediction_type == "v_prediction" and loaded.default_size == 1024
    for a, b in [(m.unet, loaded.unet), (m.vae, loaded.vae), *zip(m.text_encoders, loaded.text_encoders)]:
        _assert_same_weights(a, b)
    with pytest.raises(ModelFileError, match="model_index.json"):
        load_diffusers_folder(tmp_path)


# --- safety and bad files ------------------------------------------------------------------------

def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = make_malicious_ckpt(tmp_path / "evil.ckpt", marker)
    for fn in (load_checkpoint, load_state_dict, read_key_shapes):
        with pytest.raises(ModelFileError, match="refused: this pickle would run code") as e:
            fn(path)
        assert "evil.ckpt" in str(e.value) and "system" in str(e.value)
    assert not marker.exists()


def test_lightning_style_ckpt_with_bookkeeping_objects_loads(tmp_path):
    """Original SD1.x .ckpt files carry a Lightning ModelCheckpoint and numpy scalars; these are
    accepted through inert allow-listed stand-ins without importing Lightning."""
    import numpy as np

    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    mods = {n: types.ModuleType(n) for n in names}
    cls = type("ModelCheckpoint", (), {"__module__": names[-1]})
    mods[names[-1]].ModelCheckpoint = cls
    sys.modules.update(mods)
    try:
        obj = cls()
        obj.best_model_score = torch.tensor(0.1)
        torch.save({"state_dict": {"w": torch.ones(2)}, "global_step": np.int64(470000),
                    "callbacks": {cls: {"best": 1}}, "cb": obj}, tmp_path / "old.ckpt")
    finally:
        for n in names:
            sys.modules.pop(n, None)
    assert torch.equal(load_state_dict(tmp_path / "old.ckpt")["w"], torch.ones(2))


def _raw_safetensors(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return path


def _bad_files(d: Path, good: Path) -> dict[str, tuple[Path, str]]:
    f32 = lambda shape, a, b: {"dtype": "F32", "shape": shape, "data_offsets": [a, b]}  # noqa: E731
    blob = good.read_bytes()
    (d / "empty.safetensors").write_bytes(b"")
    (d / "tiny.safetensors").write_bytes(b"abc")
    (d / "cut.safetensors").write_bytes(blob[: len(blob) * 2 // 3])
    rnd = random.Random(0)
    (d / "random.safetensors").write_bytes(rnd.randbytes(4096))
    (d / "random.ckpt").write_bytes(rnd.randbytes(4096))
    (d / "empty.ckpt").write_bytes(b"")
    torch.save({"state_dict": {"w": torch.ones(1000)}}, d / "whole.ckpt")
    zblob = (d / "whole.ckpt").read_bytes()
    (d / "cut.ckpt").write_bytes(zblob[: len(zblob) // 2])
    (d / "long.safetensors").write_bytes(struct.pack("<Q", 10_000) + b"{}")
    return {
        "zero-byte": (d / "empty.safetensors", "empty"),
        "shorter than 8 bytes": (d / "tiny.safetensors", "too short"),
        "truncated download": (d / "cut.safetensors", "outside the file"),
        "random bytes": (d / "random.safetensors", "header claims"),
        "header longer than file": (d / "long.safetensors", "header claims 10000 bytes"),
        "invalid json": (_raw_safetensors(d / "json.safetensors", b"{not json at all"), "not valid JSON"),
        "offsets beyond file": (_raw_safetensors(d / "beyond.safetensors", {"w": f32([4], 0, 16)}, b"\0" * 8),
                                "outside the file"),
        "shape/offset mismatch": (_raw_safetensors(d / "mismatch.safetensors", {"w": f32([4], 0, 12)}, b"\0" * 12),
                                  "offsets span 12 bytes"),
        "overlap": (_raw_safetensors(d / "overlap.safetensors", {"a": f32([4], 0, 16), "b": f32([4], 8, 24)},
                                     b"\0" * 24), "overlaps"),
        "bad dtype": (_raw_safetensors(d / "dtype.safetensors", {"w": {"dtype": "X9", "shape": [1],
                                                                        "data_offsets": [0, 1]}}, b"\0"), "dtype"),
        "random ckpt": (d / "random.ckpt", "corrupt"),
        "zero-byte ckpt": (d / "empty.ckpt", "empty"),
        "truncated zip ckpt": (d / "cut.ckpt", "truncated or corrupt"),
    }


def test_bad_files_give_clear_errors(ckpts, tmp_path):
    cases = _bad_files(tmp_path, ckpts["sd1"])
    for label, (path, needle) in cases.items():
        for fn in (load_checkpoint, read_key_shapes):
            with pytest.raises(ModelFileError) as e:
                fn(path)
            msg = str(e.value)
            assert msg.startswith(path.name + ": "), (label, msg)
            assert needle in msg, (label, msg)


def test_header_lying_about_shapes_is_caught(ckpts, tmp_path):
    """A header whose byte sizes are consistent but whose shapes do not fit the architecture."""
    raw = ckpts["sd1"].read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    key = "model.diffusion_model.input_blocks.1.1.proj_out.weight"
    assert header[key]["shape"] == [32, 32, 1, 1]
    header[key]["shape"] = [32, 1, 32, 1]  # same byte size, wrong layout
    new = json.dumps(header).encode()
    path = tmp_path / "liar.safetensors"
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    with pytest.raises(ModelFileError, match=r"liar.safetensors: UNet weights do not fit .*shape mismatch.*proj_out"):
        load_checkpoint(path)


def test_missing_tensor_is_named(ckpts, tmp_path):
    sd = load_file(ckpts["sd1"])
    del sd["first_stage_model.decoder.mid.block_2.conv1.weight"]
    save_file(sd, tmp_path / "holey.safetensors")
    with pytest.raises(ModelFileError, match=r"VAE weights do not fit .*missing: decoder.mid_block.resnets.1.conv1"):
        load_checkpoint(tmp_path / "holey.safetensors")


def test_non_checkpoint_files_are_unsupported(tmp_path):
    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4),
            "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0)}
    save_file(lora, tmp_path / "style.safetensors", metadata={"ss_network_module": "networks.lora"})
    with pytest.raises(UnsupportedModelError, match=r"style.safetensors: not a Stable Diffusion checkpoint: "
                                                    r"missing model.diffusion_model.*LoRA"):
        load_checkpoint(tmp_path / "style.safetensors")
    save_file({"encoder.conv_in.weight": torch.zeros(1), "decoder.conv_out.weight": torch.zeros(1)},
              tmp_path / "vae.safetensors")
    with pytest.raises(UnsupportedModelError, match="standalone VAE"):
        load_checkpoint(tmp_path / "vae.safetensors")
    with pytest.raises(ModelFileError, match="unsupported file type"):
        (tmp_path / "model.gguf").write_bytes(b"GGUF")
        load_checkpoint(tmp_path / "model.gguf")
    with pytest.raises(ModelFileError, match="file not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
