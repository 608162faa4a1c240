"""LoRA-family files in the ecosystem's formats, applied through the prompt, removed exactly.

Tiny real-layout checkpoints; LoRA files written here in kohya (diffusers-style and LDM-style
names), LyCORIS LoHa and PEFT layouts, as those tools name their tensors.
"""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tiny_models import make_tiny_checkpoint
from webui.memory.devices import DevicePolicy
from webui.models.registry import CheckpointRegistry
from webui.services.jobs import JobState
from webui.services.model_service import ModelService
from webui.services.requests import Txt2ImgRequest
from webui.services.txt2img import Txt2ImgService
from webui.settings import Settings


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("lora")
    for d in ("models", "Lora", "LyCORIS"):
        (root / d).mkdir()
    make_tiny_checkpoint(root / "models" / "sd1.safetensors", family="sd1", seed=31)
    make_tiny_checkpoint(root / "models" / "sdxl.safetensors", family="sdxl", seed=32)
    registry = CheckpointRegistry(root / "models", root / "cache")
    registry.refresh()
    models = ModelService(registry, DevicePolicy.from_flags(["all"], None, "full", True, True),
                          lora_dirs=[root / "Lora", root / "LyCORIS"], hypernetwork_dir=root / "hypernetworks")
    svc = Txt2ImgService(models, Settings.load(root / "config.json"), root / "out")
    return models, svc, root


def generate(svc: Txt2ImgService, prompt: str):
    req = Txt2ImgRequest(prompt=prompt, steps=4, width=64, height=64, seed=7, sampler_name="Euler")
    return svc.run(req, JobState("t", "test"), save=False)


def targets(model) -> dict[str, torch.nn.Module]:
    """Attention/projection linears of the UNet (diffusers names) and the text encoder (HF names)."""
    out = {}
    for name, mod in model.sd.unet.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "0"):
            out[f"unet.{name}"] = mod
    for name, mod in model.sd.text_encoders[0].named_modules():
        if isinstance(mod, torch.nn.Linear) and name.endswith(("q_proj", "v_proj")):
            out[f"te.{name}"] = mod
    return out


def kohya_name(qualified: str) -> str:
    kind, name = qualified.split(".", 1)
    if kind == "unet":
        return "lora_unet_" + name.replace(".", "_")
    hf = name if name.startswith("text_model.") else "text_model." + name
    return "lora_te_" + hf.replace(".", "_")


def make_kohya(path: Path, model, rank: int = 2, alpha: float = 1.0, seed: int = 0, scale: float = 0.5,
               metadata: dict[str, str] | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    sd, factors = {}, {}
    for q, mod in targets(model).items():
        out_f, in_f = mod.weight.shape
        down = torch.randn(rank, in_f, generator=g) * scale
        up = torch.randn(out_f, rank, generator=g) * scale
        k = kohya_name(q)
        sd[f"{k}.lora_down.weight"], sd[f"{k}.lora_up.weight"] = down.half(), up.half()
        sd[f"{k}.alpha"] = torch.tensor(alpha)
        factors[q] = (down.half().float(), up.half().float())
    save_file(sd, str(path), metadata=metadata)
    return factors


def weights(model) -> dict[str, torch.Tensor]:
    sd = {f"unet.{k}": v.detach().clone() for k, v in model.sd.unet.state_dict().items()}
    sd.update({f"te.{k}": v.detach().clone() for k, v in model.sd.text_encoders[0].state_dict().items()})
    return sd


def test_kohya_lora_applies_scales_and_removes_bit_exact(env, monkeypatch: pytest.MonkeyPatch) -> None:
    models, svc, root = env
    m = models.load("sd1.safetensors")
    original = weights(m)
    base_image = np.asarray(generate(svc, "a red circle").images[0])
    factors = make_kohya(root / "Lora" / "style_a.safetensors", m, rank=2, alpha=1.0, scale=1.5)

    import webui.networks.lora_networks as ln
    reads: list[Path] = []
    real_read = ln.read_lora
    monkeypatch.setattr(ln, "read_lora", lambda p, *a, **k: reads.append(p) or real_read(p, *a, **k))

    res = generate(svc, "a red circle <lora:style_a:0.8>")
    img = np.asarray(res.images[0])
    assert np.abs(img.astype(int) - base_image.astype(int)).mean() > 1.0
    # A1111's scale: multiplier * alpha / rank, on every targeted layer (UNet and text encoder)
    layers = targets(m)
    for q in (next(k for k in layers if k.startswith("unet.")), next(k for k in layers if k.startswith("te."))):
        down, up = factors[q]
        want = original[q + ".weight"] + 0.8 * (1.0 / 2) * (up @ down)
        assert torch.allclose(layers[q].weight, want, atol=1e-5), q

    # only the multiplier changes: no second read of the file, weights follow
    generate(svc, "a red circle <lora:style_a:0.3>")
    assert len(reads) == 1
    q = next(iter(layers))
    down, up = factors[q]
    assert torch.allclose(layers[q].weight, original[q + ".weight"] + 0.3 * 0.5 * (up @ down), atol=1e-5)

    # te=/unet= multipliers separately
    generate(svc, "a red circle <lora:style_a:te=0:unet=1>")
    te_q = next(k for k in layers if k.startswith("te."))
    assert torch.equal(layers[te_q].weight, original[te_q + ".weight"])
    assert not torch.equal(layers[q].weight, original[q + ".weight"])

    # tag removed: every weight bit-identical, the image identical to the first one
    again = np.asarray(generate(svc, "a red circle").images[0])
    now = weights(m)
    assert all(torch.equal(now[k], original[k]) for k in original)
    assert np.array_equal(again, base_image)


def test_two_loras_add_and_hashes_go_into_the_infotext(env) -> None:
    models, svc, root = env
    m = models.load("sd1.safetensors")
    original = weights(m)
    fa = make_kohya(root / "Lora" / "style_a.safetensors", m, seed=0)
    fb = make_kohya(root / "Lora" / "b_file.safetensors", m, seed=1, alpha=2.0,
                    metadata={"ss_output_name": "StyleB"})
    res = generate(svc, "a cat <lora:style_a:1> <lora:StyleB:0.5>")  # the second one by its alias
    layers = targets(m)
    q = next(iter(layers))
    want = original[q + ".weight"] + 1.0 * 0.5 * (fa[q][1] @ fa[q][0]) + 0.5 * 1.0 * (fb[q][1] @ fb[q][0])
    assert torch.allclose(layers[q].weight, want, atol=1e-5)

    def addnet(p: Path) -> str:
        raw = p.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        return hashlib.sha256(raw[8 + n:]).hexdigest()[:12]
    assert (f'Lora hashes: "style_a: {addnet(root / "Lora" / "style_a.safetensors")}, '
            f'StyleB: {addnet(root / "Lora" / "b_file.safetensors")}"') in res.infotexts[0]
    assert res.info["warnings"] == []
    generate(svc, "a cat")
    assert torch.equal(layers[q].weight, original[q + ".weight"])


def test_ldm_named_peft_and_loha_files_hit_the_same_layers(env) -> None:
    models, svc, root = env
    m = models.load("sd1.safetensors")
    original = weights(m)
    layers = targets(m)
    from webui.models.ldm_writer import unet_to_ldm
    unet_q = [q for q in layers if q.startswith("unet.")]
    names = {f"{q[5:]}.weight": q for q in unet_q}
    ldm = {k.split("diffusion_model.", 1)[1].rsplit(".", 1)[0]: q for k, q in unet_to_ldm(names, m.sd.unet.config).items()}
    g = torch.Generator().manual_seed(5)
    ldm_sd, peft_sd, loha_sd, want = {}, {}, {}, {}
    for ldm_name, q in ldm.items():
        out_f, in_f = layers[q].weight.shape
        down, up = torch.randn(4, in_f, generator=g) * 0.3, torch.randn(out_f, 4, generator=g) * 0.3
        ldm_sd[f"lora_unet_{ldm_name.replace('.', '_')}.lora_down.weight"] = down
        ldm_sd[f"lora_unet_{ldm_name.replace('.', '_')}.lora_up.weight"] = up  # no alpha: scale 1
        peft_sd[f"{q}.lora_A.weight"] = down
        peft_sd[f"{q}.lora_B.weight"] = up
        w1a, w1b = torch.randn(out_f, 2, generator=g), torch.randn(2, in_f, generator=g)
        w2a, w2b = torch.randn(out_f, 2, generator=g), torch.randn(2, in_f, generator=g)
        loha_sd.update({f"lora_unet_{q[5:].replace('.', '_')}.hada_w1_a": w1a,
                        f"lora_unet_{q[5:].replace('.', '_')}.hada_w1_b": w1b,
                        f"lora_unet_{q[5:].replace('.', '_')}.hada_w2_a": w2a,
                        f"lora_unet_{q[5:].replace('.', '_')}.hada_w2_b": w2b,
                        f"lora_unet_{q[5:].replace('.', '_')}.alpha": torch.tensor(1.0)})
        want[q] = (up @ down, (w1a @ w1b) * (w2a @ w2b) * 0.5)
    save_file(ldm_sd, str(root / "Lora" / "ldm_names.safetensors"))
    save_file(peft_sd, str(root / "Lora" / "peft_style.safetensors"))
    save_file(loha_sd, str(root / "LyCORIS" / "loha_style.safetensors"))
    for tag, idx in (("<lora:ldm_names:1>", 0), ("<lora:peft_style:1>", 0), ("<lyco:loha_style:1>", 1)):
        res = generate(svc, f"a cat {tag}")
        assert res.info["warnings"] == [], (tag, res.info["warnings"])
        for q in unet_q:
            assert torch.allclose(layers[q].weight, original[q + ".weight"] + want[q][idx], atol=1e-4), (tag, q)
    generate(svc, "a cat")
    assert all(torch.equal(layers[q].weight, original[q + ".weight"]) for q in unet_q)


def test_bad_lora_files_warn_and_leave_the_model_unchanged(env) -> None:
    models, svc, root = env
    m = models.load("sd1.safetensors")
    original = weights(m)
    (root / "Lora" / "empty.safetensors").write_bytes(b"")
    good = root / "Lora" / "style_a.safetensors"
    make_kohya(good, m)
    (root / "Lora" / "truncated.safetensors").write_bytes(good.read_bytes()[:200])
    save_file({"lora_unet_no_such_layer.lora_down.weight": torch.zeros(2, 4),
               "lora_unet_no_such_layer.lora_up.weight": torch.zeros(4, 2)}, str(root / "Lora" / "alien.safetensors"))
    (root / "Lora" / "pickle.pt").write_bytes(b"\x80\x04cos\nsystem\n(S'echo hi'\ntR.")
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 4), "lora_unet_x.lora_up.weight": torch.zeros(4, 2),
               "lora_unet_x.dora_scale": torch.ones(4, 1)}, str(root / "Lora" / "dora.safetensors"))
    base = np.asarray(generate(svc, "a cat").images[0])
    for name, expect in (("empty", "unusable"), ("truncated", "unusable"), ("alien", "match"),
                         ("pickle", "unusable"), ("dora", "DoRA"), ("missing_file", "Networks not found")):
        res = generate(svc, f"a cat <lora:{name}:1>")
        assert any(expect in w for w in res.info["warnings"]), (name, res.info["warnings"])
        assert np.array_equal(np.asarray(res.images[0]), base), name
    now = weights(m)
    assert all(torch.equal(now[k], original[k]) for k in original)


def test_sdxl_kohya_lora_with_ldm_unet_names_and_two_text_encoders(env) -> None:
    models, svc, root = env
    m = models.load("sdxl.safetensors")
    from webui.models.ldm_writer import unet_to_ldm
    unet_lin = {f"{n}.weight": n for n, mod in m.sd.unet.named_modules()
                if isinstance(mod, torch.nn.Linear) and n.endswith(("attn2.to_k", "attn2.to_v"))}
    sd = {}
    for k, n in unet_to_ldm(unet_lin, m.sd.unet.config).items():
        ldm = k.split("diffusion_model.", 1)[1].rsplit(".", 1)[0].replace(".", "_")
        w = dict(m.sd.unet.named_modules())[n].weight
        sd[f"lora_unet_{ldm}.lora_down.weight"] = torch.randn(2, w.shape[1])
        sd[f"lora_unet_{ldm}.lora_up.weight"] = torch.randn(w.shape[0], 2)
    for i, te in enumerate(m.sd.text_encoders):
        for n, mod in te.named_modules():
            if isinstance(mod, torch.nn.Linear) and n.endswith("q_proj"):
                hf = n if n.startswith("text_model.") else "text_model." + n
                sd[f"lora_te{i + 1}_{hf.replace('.', '_')}.lora_down.weight"] = torch.randn(2, mod.weight.shape[1])
                sd[f"lora_te{i + 1}_{hf.replace('.', '_')}.lora_up.weight"] = torch.randn(mod.weight.shape[0], 2)
    save_file(sd, str(root / "Lora" / "xl_style.safetensors"))
    before = {k: v.clone() for k, v in m.sd.unet.state_dict().items()}
    res = generate(svc, "a house <lora:xl_style:1>")
    assert res.info["warnings"] == []
    assert len(models.loras.active_layers) == len(sd) // 2
    generate(svc, "a house")
    assert all(torch.equal(v, before[k]) for k, v in m.sd.unet.state_dict().items())
    models.load("sd1.safetensors")


# ---------------------------------------------------------------------------------- hypernetworks

def _a1111_hypernet(path: Path, dim: int, structure: list[float], layer_norm: bool, dropout: bool, seed: int) -> None:
    """A hypernetwork file as A1111's Hypernetwork.save writes it: per-width (k, v) state dicts
    whose `linear.N` indices count activation, LayerNorm and Dropout modules too."""
    g = torch.Generator().manual_seed(seed)

    def mlp_state() -> dict[str, torch.Tensor]:
        sd, idx = {}, 0
        for i in range(len(structure) - 1):
            a, b = int(dim * structure[i]), int(dim * structure[i + 1])
            sd[f"linear.{idx}.weight"] = torch.randn(b, a, generator=g) * 0.3
            sd[f"linear.{idx}.bias"] = torch.randn(b, generator=g) * 0.1
            idx += 1
            last = i == len(structure) - 2
            if not last:
                idx += 1  # relu
            if layer_norm:
                sd[f"linear.{idx}.weight"] = 1 + 0.1 * torch.randn(b, generator=g)
                sd[f"linear.{idx}.bias"] = 0.1 * torch.randn(b, generator=g)
                idx += 1
            if dropout and 0 < i + 1 < len(structure) - 1:
                idx += 1  # Dropout(0.3) (last_layer_dropout=True makes the one before the output count too)
        return sd
    torch.save({dim: [mlp_state(), mlp_state()], "step": 50, "name": path.stem, "layer_structure": structure,
                "activation_func": "relu", "is_layer_norm": layer_norm, "weight_initialization": "Normal",
                "sd_checkpoint": None, "sd_checkpoint_name": None, "activate_output": False,
                "use_dropout": dropout, "last_layer_dropout": True}, path)


def test_hypernetworks_change_cross_attention_context_and_remove_exactly(env) -> None:
    models, svc, root = env
    m = models.load("sd1.safetensors")
    hn_dir = models.hypernetworks.folder
    hn_dir.mkdir(parents=True, exist_ok=True)
    dim = m.sd.unet.config.cross_attention_dim
    _a1111_hypernet(hn_dir / "simple.pt", dim, [1, 2, 1], False, False, 1)
    _a1111_hypernet(hn_dir / "deep.pt", dim, [1, 1.5, 1.5, 1], True, True, 2)
    base = np.asarray(generate(svc, "a cat").images[0])

    attn = next(mod for mod in m.sd.unet.modules() if getattr(mod, "is_cross_attention", False))
    seen: dict[str, torch.Tensor] = {}
    h1 = attn.register_forward_pre_hook(lambda mod, a, kw: seen.__setitem__("ctx", kw["encoder_hidden_states"]),
                                        with_kwargs=True)
    h2 = attn.to_k.register_forward_hook(lambda mod, a, out: seen.__setitem__("k_in", a[0]))
    try:
        for name in ("simple", "deep"):
            res = generate(svc, f"a cat <hypernet:{name}:0.7>")
            assert res.info["warnings"] == []
            assert np.abs(np.asarray(res.images[0]).astype(int) - base.astype(int)).mean() > 0.05, name
            hn = models.hypernetworks.load(hn_dir / f"{name}.pt")
            x = seen["ctx"]
            assert torch.allclose(seen["k_in"], x + hn.modules[dim][0](x) * 0.7, atol=1e-5)
    finally:
        h1.remove()
        h2.remove()
    assert np.array_equal(np.asarray(generate(svc, "a cat <hypernet:simple:0>").images[0]), base)
    assert np.array_equal(np.asarray(generate(svc, "a cat").images[0]), base)
    (hn_dir / "bad.pt").write_bytes(b"junk")
    res = generate(svc, "a cat <hypernet:bad:1> <hypernet:absent:1>")
    assert any("bad is unusable" in w for w in res.info["warnings"])
    assert any("hypernet:absent" in w for w in res.info["warnings"])
    assert np.array_equal(np.asarray(res.images[0]), base)


# ------------------------------------------------------------------------------------------ VAE

def test_vae_setting_automatic_none_file_and_both_layouts(env) -> None:
    models, svc, root = env
    m = models.load("sd1.safetensors")
    vae_dir = root / "VAE"
    vae_dir.mkdir(exist_ok=True)
    models.vae_dir = vae_dir
    from webui.models.ldm_writer import vae_to_ldm
    from webui.models.detect import VAE_PREFIX

    own = {k: v.clone() for k, v in m.sd.vae.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    other = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in own.items()}
    ldm = {k[len(VAE_PREFIX):]: v for k, v in vae_to_ldm(other, m.sd.vae.config).items()}
    save_file(ldm, str(vae_dir / "other-vae.safetensors"))                         # original layout
    torch.save({"state_dict": {**ldm, "loss.logvar": torch.zeros(())}}, vae_dir / "other-vae-ckpt.ckpt")
    save_file({k: v.contiguous() for k, v in other.items()}, str(vae_dir / "diffusers-vae.safetensors"))
    (vae_dir / "broken.safetensors").write_bytes(b"\0" * 16)

    settings = svc.settings
    base = np.asarray(generate(svc, "a cat").images[0])  # Automatic, no matching file: the checkpoint's VAE
    outs = {}
    for name in ("other-vae.safetensors", "other-vae-ckpt.ckpt", "diffusers-vae.safetensors"):
        settings.set("sd_vae", name, save=False)
        res = generate(svc, "a cat")
        outs[name] = np.asarray(res.images[0])
        sha = hashlib.sha256((vae_dir / name).read_bytes()).hexdigest()[:10]
        assert f"VAE hash: {sha}, VAE: {name}" in res.infotexts[0]
        assert torch.allclose(m.sd.vae.state_dict()["decoder.conv_out.weight"], other["decoder.conv_out.weight"])
    assert np.array_equal(outs["other-vae.safetensors"], outs["diffusers-vae.safetensors"])
    assert np.array_equal(outs["other-vae.safetensors"], outs["other-vae-ckpt.ckpt"])
    assert not np.array_equal(outs["other-vae.safetensors"], base)
    settings.set("sd_vae", "None", save=False)
    assert np.array_equal(np.asarray(generate(svc, "a cat").images[0]), base)
    # Automatic picks <checkpoint stem>.vae.* beside the checkpoint
    (root / "models" / "sd1.vae.safetensors").write_bytes((vae_dir / "other-vae.safetensors").read_bytes())
    settings.set("sd_vae", "Automatic", save=False)
    res = generate(svc, "a cat")
    assert "VAE: sd1.vae.safetensors" in res.infotexts[0]
    assert np.array_equal(np.asarray(res.images[0]), outs["other-vae.safetensors"])
    (root / "models" / "sd1.vae.safetensors").unlink()
    # a broken file or an unknown name: a clear error, the VAE in use stays
    from webui.services.txt2img import GenerationError
    for bad in ("broken.safetensors", "nope.pt"):
        settings.set("sd_vae", bad, save=False)
        with pytest.raises(GenerationError, match="VAE"):
            generate(svc, "a cat")
    settings.set("sd_vae", "Automatic", save=False)
    assert np.array_equal(np.asarray(generate(svc, "a cat").images[0]), base)


def test_checkpoint_ram_cache_switches_back_without_reading_and_keeps_weights_clean(env) -> None:
    models, svc, root = env
    models.set_cache_limit(2)
    try:
        a = models.load("sd1.safetensors")
        original = weights(a)
        make_kohya(root / "Lora" / "style_a.safetensors", a, scale=1.0)
        generate(svc, "a cat <lora:style_a:1>")  # A is patched when we leave it
        b = models.load("sdxl.safetensors")
        generate(svc, "a house")                  # networks now bind to B: A's weights go back
        again = models.load("sd1.safetensors")
        assert again is a and models.cached == ["sdxl.safetensors", "sd1.safetensors"]
        now = weights(again)
        assert all(torch.equal(now[k], original[k]) for k in original)
        models.set_cache_limit(1)
        assert models.cached == ["sd1.safetensors"]
        assert models.load("sdxl.safetensors") is not b  # evicted: read again
    finally:
        models.set_cache_limit(1)
        models.load("sd1.safetensors")


def test_listing_says_which_family_a_lora_was_made_for(env) -> None:
    models, svc, root = env
    m = models.load("sd1.safetensors")
    d = torch.zeros(2, 768)
    save_file({"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": d,
               "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(768, 2)},
              str(root / "Lora" / "for_sd15.safetensors"))
    save_file({"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": d,
               "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(768, 2)},
              str(root / "Lora" / "for_xl.safetensors"))
    save_file({"x.lora_down.weight": torch.zeros(1, 4), "x.lora_up.weight": torch.zeros(4, 1)},
              str(root / "Lora" / "for_sd2.safetensors"), metadata={"ss_v2": "True"})
    models.loras.refresh()
    listed = {e["name"]: e for e in models.loras.listing(m.sd.family)}
    assert (listed["for_sd15"]["sd_version"], listed["for_sd15"]["fits"]) == ("sd1", True)
    assert (listed["for_xl"]["sd_version"], listed["for_xl"]["fits"]) == ("sdxl", False)
    assert (listed["for_sd2"]["sd_version"], listed["for_sd2"]["fits"]) == ("sd2", False)


def test_lycoris_lokr_kronecker_updates_linear_and_conv_layers(env) -> None:
    """LyCORIS LoKr as its trainer names the tensors: w1 full (4x4 here), w2 full, low-rank
    (w2_a @ w2_b) or Tucker (t2 core between w2_a and w2_b); delta = kron(w1, w2) x alpha/rank when
    a half is factorised, x1 when both are full."""
    models, svc, root = env
    m = models.load("sd1.safetensors")
    unet = m.sd.unet
    g = torch.Generator().manual_seed(9)
    lin_name = next(n for n, mod in unet.named_modules() if n.endswith("attn1.to_q"))
    conv_names = [n for n, mod in unet.named_modules() if isinstance(mod, torch.nn.Conv2d)
                  and mod.kernel_size == (3, 3) and mod.in_channels % 4 == 0 and mod.out_channels % 4 == 0][:2]
    lin = unet.get_submodule(lin_name)
    convs = [unet.get_submodule(n) for n in conv_names]
    before = {n: unet.get_submodule(n).weight.detach().clone() for n in [lin_name] + conv_names}
    sd, want = {}, {}

    def key(name: str) -> str:
        return "lora_unet_" + name.replace(".", "_")
    # linear: w1 4x4 full, w2 low-rank (rank 2), alpha 1 -> scale 1/2
    o, i = lin.weight.shape
    w1 = torch.randn(4, 4, generator=g)
    w2a, w2b = torch.randn(o // 4, 2, generator=g), torch.randn(2, i // 4, generator=g)
    sd.update({f"{key(lin_name)}.lokr_w1": w1, f"{key(lin_name)}.lokr_w2_a": w2a, f"{key(lin_name)}.lokr_w2_b": w2b,
               f"{key(lin_name)}.alpha": torch.tensor(1.0)})
    want[lin_name] = torch.kron(w1, w2a @ w2b) * 0.5
    # conv 1: both halves full (alpha present but unused)
    o, i = convs[0].weight.shape[:2]
    w1c, w2c = torch.randn(4, 4, generator=g) * 0.1, torch.randn(o // 4, i // 4, 3, 3, generator=g) * 0.1
    sd.update({f"{key(conv_names[0])}.lokr_w1": w1c, f"{key(conv_names[0])}.lokr_w2": w2c,
               f"{key(conv_names[0])}.alpha": torch.tensor(7.0)})
    want[conv_names[0]] = torch.kron(w1c[:, :, None, None], w2c)
    # conv 2: Tucker-decomposed w2 (rank 3), alpha 6 -> scale 2
    o, i = convs[1].weight.shape[:2]
    w1t = torch.randn(4, 4, generator=g) * 0.1
    t2 = torch.randn(3, 3, 3, 3, generator=g) * 0.1
    wa, wb = torch.randn(3, o // 4, generator=g), torch.randn(3, i // 4, generator=g)
    sd.update({f"{key(conv_names[1])}.lokr_w1": w1t, f"{key(conv_names[1])}.lokr_t2": t2,
               f"{key(conv_names[1])}.lokr_w2_a": wa, f"{key(conv_names[1])}.lokr_w2_b": wb,
               f"{key(conv_names[1])}.alpha": torch.tensor(6.0)})
    w2t = torch.einsum("ijkl,jr,ip->prkl", t2, wb, wa).contiguous()  # [out/4, in/4, 3, 3]
    want[conv_names[1]] = torch.kron(w1t[:, :, None, None], w2t) * 2.0
    save_file(sd, str(root / "LyCORIS" / "lokr_style.safetensors"))

    res = generate(svc, "a cat <lyco:lokr_style:0.8>")
    assert res.info["warnings"] == [], res.info["warnings"]
    for n, d in want.items():
        got = unet.get_submodule(n).weight.detach() - before[n]
        assert got.shape == d.shape and torch.allclose(got, 0.8 * d, atol=1e-4), n
    generate(svc, "a cat")
    assert all(torch.equal(unet.get_submodule(n).weight, w) for n, w in before.items())  # bit-exact removal
