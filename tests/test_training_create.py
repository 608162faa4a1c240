"""Create embedding / Create hypernetwork (issue 17, point 1): A1111's file formats key by key, read back
by our loaders, applied in generation, and the /sdapi/v1/create/* routes with their 4xx answers.

Tiny real-layout checkpoints (SD1 context width 32, SDXL encoders 32 + 48); one server of our own.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import torch
from safetensors import safe_open

from conftest import start_server, stop_server, wait_for_model
from tiny_models import make_tiny_checkpoint
from webui.memory.devices import DevicePolicy
from webui.models.registry import CheckpointRegistry
from webui.networks.hypernetworks import read_hypernetwork
from webui.services.jobs import JobQueue, JobState
from webui.services.model_service import ModelService
from webui.services.requests import Txt2ImgRequest
from webui.services.training import TrainingService
from webui.services.txt2img import Txt2ImgService
from webui.settings import Settings
from webui.training import embedding_files as ef
from webui.training import hypernetwork_files as hf

A1111_EMBEDDING_KEYS = {"string_to_token", "string_to_param", "name", "step", "sd_checkpoint", "sd_checkpoint_name"}
A1111_HYPERNET_KEYS = {"step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
                       "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure",
                       "last_layer_dropout", "optional_info"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("train-create")
    make_tiny_checkpoint(root / "models" / "sd1.safetensors", family="sd1", seed=41)
    make_tiny_checkpoint(root / "models" / "sdxl.safetensors", family="sdxl", seed=42)
    registry = CheckpointRegistry(root / "models", root / "cache")
    registry.refresh()
    models = ModelService(registry, DevicePolicy.from_flags(["all"], None, "full", True, True),
                          embeddings_dir=root / "embeddings", hypernetwork_dir=root / "hypernetworks")
    queue = JobQueue()
    training = TrainingService(models, queue, root / "embeddings", root / "hypernetworks")
    txt2img = Txt2ImgService(models, Settings.load(root / "config.json"), root / "out")
    yield SimpleNamespace(root=root, models=models, training=training, txt2img=txt2img)
    queue.close()


def token_rows(model, encoder: int, text: str) -> torch.Tensor:
    ids = model.sd.tokenizers[encoder](text, add_special_tokens=False)["input_ids"]
    return model.sd.text_encoders[encoder].get_input_embeddings().weight[ids].float()


# ------------------------------------------------------------------------------------------ embeddings

def test_sd1_embedding_file_is_a1111s_and_starts_from_the_init_tokens(env) -> None:
    m = env.models.load("sd1.safetensors")
    created = env.training.create_embedding("my emb/../x*!", 5, False, "a red circle")
    path = created.path
    assert path == env.root / "embeddings" / "my emb..x.pt" and created.info == f"Created: {path}"
    data = torch.load(path, weights_only=True)  # plain torch.save of tensors and builtins: A1111 reads it
    assert set(data) == A1111_EMBEDDING_KEYS
    assert data["string_to_token"] == {"*": 265}
    assert list(data["string_to_param"]) == ["*"]
    vec = data["string_to_param"]["*"]
    assert vec.dtype == torch.float32 and vec.shape == (5, 32) and not vec.requires_grad and vec.device.type == "cpu"
    assert data["name"] == "my emb..x" and data["step"] == 0
    assert data["sd_checkpoint"] == m.info.shorthash and len(data["sd_checkpoint"]) == 10
    assert data["sd_checkpoint_name"] == "sd1"
    rows = token_rows(m, 0, "a red circle")  # 3 tokens over 5 slots: slot i takes token i*3//5
    assert rows.shape[0] == 3
    assert torch.equal(vec, rows[[0, 0, 1, 1, 2]])
    # our loader lists it at once (usable in prompts by its name) with the same vectors
    db = m.encoder.embeddings
    assert torch.equal(db.loaded["my emb..x"].vectors_for(0), vec) and db.loaded["my emb..x"].step == 0

    # more tokens than vectors: the first N tokens; empty text: zeros
    two = torch.load(env.training.create_embedding("two", 2, False, "a red circle at the left").path,
                     weights_only=True)["string_to_param"]["*"]
    assert torch.equal(two, rows[:2])
    zeros = torch.load(env.training.create_embedding("zeros", 3, False, "").path, weights_only=True)
    assert torch.equal(zeros["string_to_param"]["*"], torch.zeros(3, 32))
    assert set(env.training.embedding_names()) >= {"my emb..x", "two", "zeros"}


def test_embedding_names_counts_and_overwrite_are_checked(env) -> None:
    env.models.load("sd1.safetensors")
    first = env.training.create_embedding("taken", 1, False, "*").path
    with pytest.raises(ef.NameTakenError, match="already exists"):
        env.training.create_embedding("taken", 2)
    assert torch.load(first, weights_only=True)["string_to_param"]["*"].shape[0] == 1
    env.training.create_embedding("taken", 2, True, "*")  # overwrite
    assert torch.load(first, weights_only=True)["string_to_param"]["*"].shape[0] == 2
    (env.root / "embeddings" / "other.safetensors").write_bytes(b"x")  # same name, another format
    with pytest.raises(ef.NameTakenError, match="already has the name"):
        env.training.create_embedding("other", 1, True)
    for bad in ("", "  ", "/*?", ".hidden"):
        with pytest.raises(ValueError):
            env.training.create_embedding(bad)
    for n in (0, 76, 1.5, True):
        with pytest.raises(ValueError, match="vectors per token"):
            env.training.create_embedding("n", n)


def test_sdxl_embedding_is_clip_l_and_clip_g_safetensors(env) -> None:
    m = env.models.load("sdxl.safetensors")
    path = env.training.create_embedding("xl", 4, False, "a blue star").path
    assert path.name == "xl.safetensors"
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == {"clip_l", "clip_g"}
        clip_l, clip_g = f.get_tensor("clip_l"), f.get_tensor("clip_g")
        assert f.metadata()["step"] == "0" and f.metadata()["sd_checkpoint"] == m.info.shorthash
    assert clip_l.dtype == clip_g.dtype == torch.float32
    assert clip_l.shape == (4, 32) and clip_g.shape == (4, 48)
    idx = [0, 0, 1, 2]  # 3 tokens over 4 slots
    assert torch.equal(clip_l, token_rows(m, 0, "a blue star")[idx])
    assert torch.equal(clip_g, token_rows(m, 1, "a blue star")[idx])
    assert "xl" in m.encoder.embeddings.loaded
    assert "my emb..x" in m.encoder.embeddings.skipped  # the SD1 ones do not fit SDXL: listed as skipped
    stored = ef.read_embedding(path)
    assert stored.step == 0 and set(stored.vectors) == {"clip_l", "clip_g"}
    env.models.load("sd1.safetensors")


def test_save_embedding_with_optimizer_state_and_a1111_checksum(tmp_path: Path) -> None:
    vec = torch.randn(3, 8)
    opt = torch.optim.AdamW([vec.clone().requires_grad_()], lr=0.005)
    path = ef.save_embedding(tmp_path / "e.pt", vec, name="e", step=12, sd_checkpoint="0123456789",
                             sd_checkpoint_name="m", optimizer_state=opt.state_dict())
    optim = torch.load(f"{path}.optim", weights_only=True)
    assert set(optim) == {"hash", "optimizer_state_dict"}

    def a1111_checksum(v: torch.Tensor) -> str:  # the formula as written, over tensor elements
        r = 0
        for x in v.reshape(-1) * 100:
            r = (r * 281 ^ int(x) * 997) & 0xFFFFFFFF
        return f"{r & 0xffff:04x}"
    assert optim["hash"] == a1111_checksum(vec) == ef.embedding_checksum(vec)
    assert ef.load_optimizer_state(path, vec)["param_groups"][0]["lr"] == 0.005
    assert ef.load_optimizer_state(path, vec + 1) is None  # state of other vectors: not reused
    stored = ef.read_embedding(path)
    assert stored.step == 12 and stored.sd_checkpoint == "0123456789" and torch.equal(stored.tensors, vec)


# --------------------------------------------------------------------------------------- hypernetworks

# (layer structure, activation, layer norm, dropout on, dropout text) → the indices A1111's nn.Sequential gives
# its Linear (L) and LayerNorm (N) modules: activations and Dropouts take an index too
STRUCTURES = [
    ("1, 2, 1", "linear", False, False, "0, 0, 0", {0: "L", 1: "L"}),
    ("1, 2, 1", "relu", False, False, "0, 0, 0", {0: "L", 2: "L"}),
    ("1, 2, 1", "relu", True, False, "0, 0, 0", {0: "L", 2: "N", 3: "L", 4: "N"}),
    ("1, 2, 1", "relu", False, False, "0, 0.3, 0", {0: "L", 2: "L"}),  # dropout off: the text is ignored
    ("1, 1.5, 1", "swish", False, True, "0, 0.3, 0", {0: "L", 3: "L"}),
    ("1, 2, 2, 1", "relu", True, True, "0, 0.1, 0.2, 0", {0: "L", 2: "N", 4: "L", 6: "N", 8: "L", 9: "N"}),
    ([1, 0.5, 1], "linear", True, True, [0, 0.25, 0], {0: "L", 1: "N", 3: "L", 4: "N"}),
]


@pytest.mark.parametrize("structure, act, norm, dropout, drops, expected", STRUCTURES)
def test_hypernetwork_keys_follow_a1111s_sequential(tmp_path: Path, structure, act, norm, dropout, drops,
                                                    expected) -> None:
    path = hf.create_hypernetwork(tmp_path, "hn", [32, 768], False, structure, act, "Normal", norm, dropout, drops,
                                  sd_checkpoint="abcdef0123", sd_checkpoint_name="sd1")
    data = torch.load(path, weights_only=True)
    assert {k for k in data if isinstance(k, str)} == A1111_HYPERNET_KEYS and {32, 768} <= set(data)
    mult = [float(x) for x in (structure.split(",") if isinstance(structure, str) else structure)]
    for dim in (32, 768):
        k_state, v_state = data[dim]
        assert set(k_state) == set(v_state)
        assert set(k_state) == {f"linear.{i}.{p}" for i in expected for p in ("weight", "bias")}
        widths = [int(dim * m) for m in mult]
        linears = [i for i, kind in sorted(expected.items()) if kind == "L"]
        for n, i in enumerate(linears):
            assert k_state[f"linear.{i}.weight"].shape == (widths[n + 1], widths[n])
            assert k_state[f"linear.{i}.weight"].dtype == torch.float32
    drop_values = [float(x) for x in (drops.split(",") if isinstance(drops, str) else drops)]
    assert data["dropout_structure"] == (drop_values if dropout else [0] * len(mult))
    assert data["last_layer_dropout"] == bool(dropout and drop_values[-2] != 0)
    assert data["layer_structure"] == mult and data["activation_func"] == act and data["is_layer_norm"] == norm
    assert data["use_dropout"] == dropout and data["activate_output"] is False and data["optional_info"] is None
    assert data["step"] == 0 and data["name"] == "hn" and data["weight_initialization"] == "Normal"
    assert data["sd_checkpoint"] == "abcdef0123" and data["sd_checkpoint_name"] == "sd1"
    hn = read_hypernetwork(path)  # our loader rebuilds the same modules and loads every weight
    for dim in (32, 768):
        got = {f"linear.{k}": v for k, v in hn.modules[dim][0].state_dict().items()}
        assert got.keys() == data[dim][0].keys() and all(torch.equal(got[k], data[dim][0][k]) for k in got)


@pytest.mark.parametrize("init", hf.WEIGHT_INITS)
def test_hypernetwork_weight_init_as_a1111(tmp_path: Path, init: str) -> None:
    torch.manual_seed(0)
    data = torch.load(hf.create_hypernetwork(tmp_path, "w", [640], False, "1, 2, 1", "leakyrelu", init, True),
                      weights_only=True)
    k = data[640][0]
    w, norm_w = k["linear.0.weight"], k["linear.2.weight"]  # Linear 640→1280, then its LayerNorm
    assert all(torch.count_nonzero(v) == 0 for n, v in k.items() if n.endswith("bias"))
    assert abs(norm_w.std().item() - 0.01) < 0.002  # LayerNorms always get N(0, 0.01), whatever the choice
    fan_in, fan_out = 640, 1280
    gain = 2 ** 0.5  # A1111 asks kaiming for leaky_relu with torch's default a=0: ReLU's gain
    expected_std = {"Normal": 0.01, "XavierUniform": (2 / (fan_in + fan_out)) ** 0.5,
                    "XavierNormal": (2 / (fan_in + fan_out)) ** 0.5, "KaimingUniform": gain / fan_in ** 0.5,
                    "KaimingNormal": gain / fan_in ** 0.5}[init]
    assert abs(w.std().item() / expected_std - 1) < 0.03
    if init.endswith("Uniform"):
        assert w.abs().max().item() <= expected_std * 3 ** 0.5 + 1e-6


@pytest.mark.parametrize("kwargs, needle", [
    (dict(layer_structure="2, 1"), "first and last"),
    (dict(layer_structure="1, 0, 1"), "above 0"),
    (dict(layer_structure="1, x, 1"), "not a list of numbers"),
    (dict(activation_func="nope"), "unknown activation"),
    (dict(activation_func="threshold"), "unknown activation"),  # needs arguments: A1111 would crash on it
    (dict(activation_func="glu"), "unknown activation"),  # halves the width
    (dict(weight_init="Uniform"), "unknown weight initialization"),
    (dict(use_dropout=True, dropout_structure="0, 0.5"), "has 2 values"),
    (dict(use_dropout=True, dropout_structure="0, 1.5, 0"), "below 1"),
    (dict(use_dropout=True, dropout_structure="0.2, 0.1, 0"), "first and last"),
    (dict(enable_sizes=[]), "at least one"),
    (dict(enable_sizes=["x"]), "whole numbers"),
    (dict(name="None"), "reserved"),
    (dict(name="???"), "empty"),
])
def test_hypernetwork_bad_fields_are_refused(tmp_path: Path, kwargs: dict, needle: str) -> None:
    args = dict(name="bad") | kwargs
    with pytest.raises(ValueError, match=needle):
        hf.create_hypernetwork(tmp_path, **args)
    assert not list(tmp_path.iterdir())


def test_created_hypernetwork_is_listed_and_changes_the_unet(env) -> None:
    m = env.models.load("sd1.safetensors")
    mismatch = env.training.create_hypernetwork("std-sizes")
    assert "context width is 32" in mismatch.info  # A1111's default sizes do nothing on this model: said so
    created = env.training.create_hypernetwork("hn32", [32], False, "1, 2, 1", "relu", "Normal", True)
    assert created.note == "" and created.info == f"Created: {created.path}"
    data = torch.load(created.path, weights_only=True)
    assert data["sd_checkpoint"] == m.info.shorthash and data["sd_checkpoint_name"] == "sd1"
    with pytest.raises(ef.NameTakenError):
        env.training.create_hypernetwork("hn32", [32])
    assert {"hn32", "std-sizes"} <= set(env.training.hypernetwork_names())
    listing = {e["name"]: e for e in env.models.hypernetworks.listing("sd1")}
    assert "error" not in listing["hn32"]

    unet, hns = m.sd.unet, env.models.hypernetworks
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 32, generator=g)
    t = torch.tensor([500])

    def run(names: list[str]) -> torch.Tensor:
        report = hns.activate(m, [SimpleNamespace(positional=[n, "1"]) for n in names])
        assert report.warnings == []
        with torch.no_grad():
            return unet(x, t, encoder_hidden_states=ctx).sample
    base = run([])
    changed = run(["hn32"])
    assert (changed - base).abs().max().item() > 1e-6  # N(0, 0.01) weights: a small but real change
    assert torch.equal(run([]), base)  # and removed exactly

    # a generation with it: no warning, the hash in the infotext
    req = Txt2ImgRequest(prompt="a cat <hypernet:hn32:1>", steps=2, width=64, height=64, seed=3, sampler_name="Euler")
    res = env.txt2img.run(req, JobState("t", "test"), save=False)
    assert res.info["warnings"] == []
    assert "hn32:" in res.info["infotexts"][0]
    hns.activate(m, [])


def test_hypernetwork_optimizer_file(tmp_path: Path) -> None:
    spec = hf.make_spec("1, 2, 1", "relu")
    modules = hf.new_modules([8], spec)
    params = [p for pair in modules.values() for mlp in pair for p in mlp.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-5)
    path = hf.save_hypernetwork(tmp_path / "h.pt", modules, spec.info(), name="h", step=7, sd_checkpoint=None,
                                sd_checkpoint_name=None, optimizer_name="AdamW", optimizer_state=opt.state_dict())
    optim = torch.load(f"{path}.optim", weights_only=True)
    assert set(optim) == {"optimizer_name", "hash", "optimizer_state_dict"}
    assert optim["hash"] == hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    name, state = hf.load_optimizer_state(path)
    assert name == "AdamW" and state["param_groups"][0]["lr"] == 1e-5
    hn = read_hypernetwork(path)
    assert hn.info["step"] == 7 and set(hn.modules) == {8}
    path.write_bytes(path.read_bytes() + b"\0")  # another file now: the state is not reused
    assert hf.load_optimizer_state(path) is None


# -------------------------------------------------------------------------------------------- the UI

def test_train_tab_builds_with_a1111_elem_ids_and_creates(env) -> None:
    import gradio as gr

    from webui.ui.train_tab import create_train_tab

    env.models.load("sd1.safetensors")
    svc = SimpleNamespace(training=env.training)
    with gr.Blocks() as demo:
        tab = create_train_tab(svc)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"train_tabs", "train_new_embedding_name", "train_initialization_text", "train_nvpt",
            "train_overwrite_old_embedding", "train_create_embedding", "train_new_hypernetwork_name",
            "train_new_hypernetwork_sizes", "train_new_hypernetwork_layer_structure",
            "train_new_hypernetwork_activation_func", "train_new_hypernetwork_initialization_option",
            "train_new_hypernetwork_add_layer_norm", "train_new_hypernetwork_use_dropout",
            "train_overwrite_old_hypernetwork", "train_create_hypernetwork", "ti_output", "ti_gallery",
            "ti_progress", "ti_error"} <= ids
    assert "32" in tab.hypernetwork.sizes.choices[-1] and "32" in tab.hypernetwork.sizes.value  # the model's width
    by_trigger = {}
    for f in demo.fns.values():
        for block, event in f.targets:
            by_trigger[(block, event)] = f.fn
    create = by_trigger[(tab.embedding.create._id, "click")]
    info, err = create("ui-emb", "a red", 2, False)
    assert info.startswith("Created: ") and info.endswith("ui-emb.pt") and err == ""
    with pytest.warns(UserWarning, match="already exists"):  # gr.Warning outside a request
        info, err = create("ui-emb", "a red", 2, False)
    assert info == "" and "already exists" in err
    # the page may be built before the model loads: selecting the sub-tab offers (and ticks) its width once
    follow = by_trigger[(tab.hypernetwork.tab._id, "select")]
    update, offered = follow(["768", "320", "640", "1280"], [])
    assert update["choices"][-1] == "32" and update["value"] == ["768", "320", "640", "1280", "32"]
    assert follow(["768"], offered)[0]["value"] == ["768"]  # unticked by the user: stays so
    hn_create = by_trigger[(tab.hypernetwork.create._id, "click")]
    with pytest.warns(UserWarning, match="first and last"):
        info, err = hn_create("ui-hn", ["32"], "2, 1", "linear", "Normal", False, False, "0, 0, 0", False)
    assert info == "" and "first and last" in err


# ------------------------------------------------------------------------------------------- the API

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("train-api")
    ckpt = make_tiny_checkpoint(data / "models" / "Stable-diffusion" / "tiny.safetensors", family="sd1", seed=43)
    srv = start_server(data, ckpt.parent, "--ckpt", str(ckpt))
    wait_for_model(srv)
    yield srv
    stop_server(srv)


def test_create_routes_answer_like_a1111_and_list_at_once(server) -> None:
    r = requests.post(server.api("create/embedding"), json={"name": "api-emb"}, timeout=60)
    assert r.status_code == 200, r.text
    path = server.data_dir / "models" / "embeddings" / "api-emb.pt"
    assert r.json() == {"info": f"create embedding filename: {path}"}
    loaded = requests.get(server.api("embeddings"), timeout=10).json()["loaded"]
    assert loaded["api-emb"]["vectors"] == 1 and loaded["api-emb"]["shape"] == 32

    r = requests.post(server.api("txt2img"), json={"prompt": "a photo of api-emb", "steps": 2, "width": 64,
                                                   "height": 64, "seed": 1}, timeout=120)
    assert r.status_code == 200, r.text
    ti_hash = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert f'TI hashes: "api-emb: {ti_hash}"' in json.loads(r.json()["info"])["infotexts"][0]

    r = requests.post(server.api("create/hypernetwork"), json={"name": "api-hn", "enable_sizes": ["32"],
                                                               "layer_structure": [1, 2, 1]}, timeout=60)
    assert r.status_code == 200, r.text
    hn_path = server.data_dir / "models" / "hypernetworks" / "api-hn.pt"
    assert r.json() == {"info": f"create hypernetwork filename: {hn_path}"}
    listed = {e["name"] for e in requests.get(server.api("hypernetworks"), timeout=10).json()}
    assert "api-hn" in listed
    r = requests.post(server.api("create/hypernetwork"), json={"name": "defaults"}, timeout=60)
    assert r.status_code == 200 and "context width is 32" in r.json()["info"]
    assert set(torch.load(server.data_dir / "models" / "hypernetworks" / "defaults.pt", weights_only=True)) \
        >= {768, 320, 640, 1280}

    # taken names: 409 without overwrite, 200 with it
    assert requests.post(server.api("create/embedding"), json={"name": "api-emb"}, timeout=60).status_code == 409
    r = requests.post(server.api("create/embedding"), json={"name": "api-emb", "overwrite_old": True,
                                                            "num_vectors_per_token": 3}, timeout=60)
    assert r.status_code == 200
    assert requests.get(server.api("embeddings"), timeout=10).json()["loaded"]["api-emb"]["vectors"] == 3
    assert requests.post(server.api("create/hypernetwork"), json={"name": "api-hn"}, timeout=60).status_code == 409


@pytest.mark.parametrize("route, body, status, needle", [
    ("create/embedding", {}, 422, "name"),
    ("create/embedding", {"name": "a", "num_vectors_per_token": 0}, 422, "num_vectors_per_token"),
    ("create/embedding", {"name": "a", "num_vectors_per_token": 100}, 422, "num_vectors_per_token"),
    ("create/embedding", {"name": "a", "num_vectors_per_token": "many"}, 422, "num_vectors_per_token"),
    ("create/embedding", {"name": 5}, 422, "name"),
    ("create/embedding", {"name": "a", "init_text": None}, 422, "init_text"),
    ("create/embedding", {"name": "***"}, 422, "name is empty"),
    ("create/hypernetwork", {}, 422, "name"),
    ("create/hypernetwork", {"name": "h", "layer_structure": "2, 1"}, 422, "first and last"),
    ("create/hypernetwork", {"name": "h", "layer_structure": 3}, 422, "layer_structure"),
    ("create/hypernetwork", {"name": "h", "activation_func": "nope"}, 422, "unknown activation"),
    ("create/hypernetwork", {"name": "h", "weight_init": "Zero"}, 422, "unknown weight initialization"),
    ("create/hypernetwork", {"name": "h", "enable_sizes": []}, 422, "enable_sizes"),
    ("create/hypernetwork", {"name": "h", "enable_sizes": "768"}, 422, "enable_sizes"),
    ("create/hypernetwork", {"name": "h", "enable_sizes": [0]}, 422, "enable_sizes"),
    ("create/hypernetwork", {"name": "h", "use_dropout": True, "dropout_structure": "0, 0.5"}, 422, "values"),
    ("create/hypernetwork", {"name": "h", "add_layer_norm": "maybe"}, 422, "add_layer_norm"),
])
def test_create_routes_refuse_bad_input_with_4xx(server, route: str, body: dict, status: int, needle: str) -> None:
    r = requests.post(server.api(route), json=body, timeout=60)
    assert r.status_code == status, r.text
    assert needle in r.text
    assert not (server.data_dir / "models" / "hypernetworks" / "h.pt").exists()
