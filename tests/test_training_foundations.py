"""The training foundations (webui/training): A1111's schedule syntax, the shipped prompt templates,
the dataset rules and its reproducible batches (real image files, a real tiny diffusers VAE), the
log directory and loss CSV, and the diffusion loss moved out of tools/train_default_model.py."""
from __future__ import annotations

import datetime
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_models import TINY_VAE
from webui.training.dataset import (
    BatchIterator, TrainingDataset, alpha_weight_map, build_prompt, caption_from_filename,
)
from webui.training.diffusion_loss import EMA, diffusion_loss, diffusion_target, optimizer_step
from webui.training.logdir import TrainingLogDir, read_loss_csv
from webui.training.schedule import LearnRateSchedule, WarmupSchedule, parse_schedule, warmup_cosine_lr
from webui.training.templates import (
    REPO_TEMPLATES_DIR, PromptTemplate, fill_template, find_template, list_templates, load_template,
)

ROOT = Path(__file__).resolve().parent.parent
A1111_TEMPLATES = ("hypernetwork.txt", "none.txt", "style.txt", "style_filewords.txt", "subject.txt",
                   "subject_filewords.txt")


# ------------------------------------------------------------------------------ schedule

def test_schedule_rates_until_each_step_then_to_the_end() -> None:
    s = LearnRateSchedule("0.005:100, 1e-3:1000, 1e-5", max_steps=2000)
    assert [s.rate_at(i) for i in (0, 99, 100, 999, 1000, 1999)] == [0.005, 0.005, 1e-3, 1e-3, 1e-5, 1e-5]
    assert s.end_step == 2000 and not s.finished(1999) and s.finished(2000)
    assert s.segments == ((0.005, 100), (1e-3, 1000), (1e-5, 2000))
    assert LearnRateSchedule("0.01:-1", 300).segments == ((0.01, 300),)
    assert LearnRateSchedule(0.005, 10).segments == ((0.005, 10),)  # the API may send a number
    assert LearnRateSchedule(" 2e-3 , ", 10).rate_at(0) == 2e-3  # spaces and a trailing comma
    with pytest.raises(ValueError, match="past the end"):
        s.rate_at(2000)


def test_schedule_resume_skips_finished_pairs_and_clamps_to_max() -> None:
    text = "0.005:100, 1e-3:1000, 1e-5"
    resumed = LearnRateSchedule(text, max_steps=2000, cur_step=500)
    assert resumed.segments == ((1e-3, 1000), (1e-5, 2000)) and resumed.rate_at(500) == 1e-3
    assert LearnRateSchedule(text, 2000, cur_step=100).rate_at(100) == 1e-3  # a pair AT the step is done
    clamped = LearnRateSchedule(text, max_steps=500)
    assert clamped.segments == ((0.005, 100), (1e-3, 500)) and clamped.end_step == 500
    short = LearnRateSchedule("1e-3:100", max_steps=1000)  # A1111 stops where the schedule stops
    assert short.end_step == 100 and short.finished(100)
    done = LearnRateSchedule("0.005:100", max_steps=1000, cur_step=100)
    assert done.segments == () and done.finished(100) and "nothing left" in done.describe()


@pytest.mark.parametrize("text, fragment", [
    ("0.005:abc", "step 'abc' in '0.005:abc' is not a whole number"),
    ("", "is empty"),
    (" , ", "is empty"),
    ("1e-3:100, 0.5:50", "step 50 in '0.5:50' is not after step 100"),
    ("1e-3:100, 0.5:100", "is not after step 100"),
    ("fast", "'fast' in 'fast' is not a number"),
    ("1e-3, 1e-4:100", "'1e-4:100' follows '1e-3'"),
    ("1e-3:-1, 1e-4", "follows '1e-3:-1'"),
    ("1e-3:10:20", "more than one ':'"),
    ("-0.1", "finite number >= 0"),
    ("nan", "finite number >= 0"),
    ("0.1:0", "must be positive"),
    ("0.1:1.5", "not a whole number"),
])
def test_schedule_errors_name_the_wrong_part(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as e:
        LearnRateSchedule(text, 1000)
    assert fragment in str(e.value)


def test_clip_value_schedule_and_optimizer_and_warmup() -> None:
    with pytest.raises(ValueError, match="gradient clipping value schedule"):
        parse_schedule("0.1:x", what="gradient clipping value")
    clip = LearnRateSchedule("0.1:10, 0.05", 20, what="gradient clipping value")
    assert (clip.rate_at(9), clip.rate_at(10)) == (0.1, 0.05)
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=1.0)
    assert clip.apply(opt, 12) == 0.05 and opt.param_groups[0]["lr"] == 0.05
    warm = WarmupSchedule(LearnRateSchedule("1e-3:50, 1e-4", 100), warmup_steps=10)
    assert warm.rate_at(0) == pytest.approx(1e-4) and warm.rate_at(4) == pytest.approx(5e-4)
    assert warm.rate_at(9) == pytest.approx(1e-3) and warm.rate_at(60) == 1e-4 and warm.end_step == 100
    assert WarmupSchedule(LearnRateSchedule("1e-3", 5), 0).rate_at(0) == 1e-3
    # the built-in model's curve (moved from tools/train_default_model.py): warm-up, then cosine to 10 %
    assert warmup_cosine_lr(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert warmup_cosine_lr(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert warmup_cosine_lr(100, 100, 1.0, 10) == pytest.approx(0.1)


# ------------------------------------------------------------------------------ templates

def test_a1111_templates_ship_under_their_names() -> None:
    assert REPO_TEMPLATES_DIR == ROOT / "textual_inversion_templates"
    found = list_templates()
    assert set(A1111_TEMPLATES) <= set(found)
    t = {n: PromptTemplate.load(found[n]) for n in A1111_TEMPLATES}
    assert t["none.txt"].lines == ("picture",)
    assert t["subject.txt"].lines[:2] == ("a photo of a [name]", "a rendering of a [name]")
    assert len(t["subject.txt"].lines) == len(t["subject_filewords.txt"].lines) == len(t["hypernetwork.txt"].lines) == 27
    assert len(t["style.txt"].lines) == len(t["style_filewords.txt"].lines) == 19
    assert t["style.txt"].lines[0] == "a painting, art by [name]"
    assert t["style_filewords.txt"].lines[0] == "a painting of [filewords], art by [name]"
    assert all("[name]" in ln and "[filewords]" not in ln for n in ("subject.txt", "style.txt") for ln in t[n].lines)
    assert all("[name]" in ln and "[filewords]" in ln for n in ("subject_filewords.txt", "style_filewords.txt")
               for ln in t[n].lines)
    assert all("[filewords]" in ln and "[name]" not in ln for ln in t["hypernetwork.txt"].lines)


def test_user_templates_win_and_substitution(tmp_path: Path) -> None:
    user = tmp_path / "textual_inversion_templates"
    (user / "mine").mkdir(parents=True)
    (user / "style.txt").write_text("custom [name] of [filewords]\n\n", encoding="utf-8")
    (user / "mine" / "extra.txt").write_text("x [name]\n", encoding="utf-8")
    (user / "empty.txt").write_text("\n \n", encoding="utf-8")
    found = list_templates(tmp_path)
    assert found["style.txt"] == user / "style.txt" and found["extra.txt"] == user / "mine" / "extra.txt"
    assert found["subject.txt"] == REPO_TEMPLATES_DIR / "subject.txt"
    t = load_template("style.txt", tmp_path)
    assert t.lines == ("custom [name] of [filewords]",) and t.uses_filewords
    assert t.render(random.Random(0), "my-emb", "red ball") == "custom my-emb of red ball"
    assert fill_template("a [name], [filewords]", "cat", "[name] toy") == "a cat, cat toy"  # A1111's order
    with pytest.raises(ValueError, match="has no lines"):
        load_template("empty.txt", tmp_path)
    with pytest.raises(ValueError, match="'nope.txt' not found"):
        find_template("nope.txt", tmp_path)


# ------------------------------------------------------------------------------ dataset

@pytest.fixture(scope="module")
def vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(**TINY_VAE).eval()


def _png(path: Path, color: tuple[int, ...], size: tuple[int, int] = (64, 64), mode: str = "RGB") -> None:
    Image.new(mode, size, color).save(path)


def _folder(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir(parents=True)
    _png(d / "001-red circle.png", (200, 20, 20))
    _png(d / "blue.jpg", (20, 20, 200), (80, 50))
    (d / "blue.txt").write_text("a blue square, big, shiny\n", encoding="utf-8")
    _png(d / "2 green.png", (20, 200, 20), (64, 64), "RGBA")
    (d / "notes.txt").write_text("not an image", encoding="utf-8")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (d / "sub").mkdir()
    _png(d / "sub" / "deep.png", (1, 2, 3))  # not recursive
    return d


def test_dataset_captions_skips_and_errors(tmp_path: Path, vae) -> None:
    ds = TrainingDataset(_folder(tmp_path), vae.encode, width=64, height=64)
    assert [(e.path.name, e.caption) for e in ds.entries] == [
        ("001-red circle.png", "red circle"), ("2 green.png", "green"), ("blue.jpg", "a blue square, big, shiny")]
    assert all(e.latent.shape == (4, 8, 8) and e.size == (64, 64) for e in ds.entries)  # resized, not cropped
    assert ds.tag_frequency() == {"red circle": 1, "green": 1, "a blue square": 1, "big": 1, "shiny": 1}
    assert caption_from_filename("12-a_red_ball", r"[a-z]+", "+") == "a+red+ball"
    assert caption_from_filename("-3-4 x ball") == "x ball" and caption_from_filename("3 4x") == "4x"
    ds2 = TrainingDataset(_folder(tmp_path / "b"), vae.encode, width=64, height=64, word_regex=r"\w+", join_string="_")
    assert ds2.entries[0].caption == "red_circle"
    with pytest.raises(ValueError, match="does not exist"):
        TrainingDataset(tmp_path / "missing", vae.encode)
    with pytest.raises(ValueError, match="not set"):
        TrainingDataset("", vae.encode)
    only_text = tmp_path / "txt"
    only_text.mkdir()
    (only_text / "a.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match="has no images"):
        TrainingDataset(only_text, vae.encode)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        TrainingDataset(only_text, vae.encode, word_regex="(")
    with pytest.raises(ValueError, match="latent sampling method"):
        TrainingDataset(only_text, vae.encode, latent_sampling_method="sometimes")


def test_latent_sampling_methods_with_a_real_vae(tmp_path: Path, vae) -> None:
    d = tmp_path / "one"
    d.mkdir()
    _png(d / "001-red circle.png", (200, 20, 20))
    scale = 0.18215
    pixels = torch.from_numpy(np.asarray(Image.open(d / "001-red circle.png"), np.float32) / 127.5 - 1)
    with torch.no_grad():
        post = vae.encode(pixels.permute(2, 0, 1)[None]).latent_dist
    mean, std = post.mean[0] * scale, post.std[0] * scale

    det = TrainingDataset(d, vae.encode, width=64, height=64, latent_sampling_method="deterministic",
                          latent_scale=scale)
    assert torch.allclose(det.latent(0), mean, atol=1e-6)
    once = TrainingDataset(d, vae.encode, width=64, height=64, latent_scale=scale, seed=3)
    z = once.latent(0)
    assert not torch.allclose(z, mean) and torch.equal(z, once.latent(0))  # one sample, kept
    assert ((z - mean) / std).std() == pytest.approx(1.0, abs=0.35)  # a posterior sample
    again = TrainingDataset(d, vae.encode, width=64, height=64, latent_scale=scale, seed=3)
    assert torch.equal(again.latent(0), z)  # reproducible from the seed
    rnd = TrainingDataset(d, vae.encode, width=64, height=64, latent_sampling_method="random", latent_scale=scale)
    gen = torch.Generator().manual_seed(0)
    a, b = rnd.latent(0, gen), rnd.latent(0, gen)
    assert not torch.equal(a, b) and torch.allclose((a + b) / 2, mean, atol=float(std.max()) * 4)
    plain = TrainingDataset(d, lambda px: vae.encode(px).latent_dist.mean, width=64, height=64,
                            latent_sampling_method="random")
    assert plain.latent_sampling_method == "once"  # a plain tensor has nothing to sample (as A1111)


def test_png_alpha_becomes_loss_weights(tmp_path: Path, vae) -> None:
    d = tmp_path / "alpha"
    d.mkdir()
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 32:, 3] = 255  # right half opaque
    Image.fromarray(rgba, "RGBA").save(d / "half.png")
    _png(d / "opaque.png", (0, 0, 255))
    _png(d / "solid_alpha.png", (0, 255, 0, 255), mode="RGBA")
    ds = TrainingDataset(d, vae.encode, width=64, height=64, use_weight=True)
    w = {e.path.name: e.weight for e in ds.entries}
    half = w["half.png"][0]
    assert half.shape == (8, 8) and float(half.mean()) == pytest.approx(1.0, abs=1e-5)
    assert float(half[:, :3].max()) < 0.05 and float(half[:, 5:].min()) > 1.9
    assert torch.equal(w["opaque.png"], torch.ones(1, 8, 8)) and torch.equal(w["solid_alpha.png"], torch.ones(1, 8, 8))
    batch = next(BatchIterator(ds, batch_size=3))
    assert batch.weights is not None and batch.weights.shape == batch.latents.shape == (3, 4, 8, 8)
    assert next(BatchIterator(TrainingDataset(d, vae.encode, width=64, height=64))).weights is None
    wide = alpha_weight_map(Image.fromarray(rgba[:, :, 3]).resize((128, 64)), (4, 16))  # (w, h) not swapped
    assert wide.shape == (1, 4, 16) and float(wide[0, :, 12:].min()) > 1.5


def test_varsize_batches_stay_within_a_size_bucket(tmp_path: Path, vae) -> None:
    d = tmp_path / "var"
    d.mkdir()
    for i in range(3):
        _png(d / f"sq{i}.png", (40 * i, 10, 10), (64, 64))
    for i in range(2):
        _png(d / f"wide{i}.png", (10, 40 * i, 10), (83, 45))  # cropped to 80x40
    ds = TrainingDataset(d, vae.encode, varsize=True)
    assert {k: len(v) for k, v in ds.buckets.items()} == {(64, 64): 3, (80, 40): 2}
    it = BatchIterator(ds, batch_size=2, seed=1)
    assert it.batches_per_epoch == 2  # 5 images // 2, as A1111
    for _ in range(12):
        b = it.next_batch()
        assert len({p.name[:2] for p in b.paths}) == 1  # one bucket per batch: the latents stack
        assert b.latents.shape[0] == 2
    assert BatchIterator(ds, batch_size=50).batch_size == 5  # capped by the dataset size


def _tagged(tmp_path: Path) -> Path:
    d = tmp_path / "tags"
    d.mkdir()
    for i in range(4):
        _png(d / f"im{i}.png", (60 * i, 30, 90))
        (d / f"im{i}.txt").write_text(f"tag{i}, red, round, big, shiny", encoding="utf-8")
    return d


def test_prompts_shuffle_and_dropout_are_seeded(tmp_path: Path, vae) -> None:
    ds = TrainingDataset(_tagged(tmp_path), vae.encode, width=64, height=64)
    tpl = load_template("subject_filewords.txt")

    def prompts(seed: int, **kw) -> list[str]:
        it = BatchIterator(ds, batch_size=2, seed=seed, template=tpl, name="myemb", **kw)
        return [p for _ in range(6) for p in it.next_batch().prompts]

    shuffled = prompts(7, shuffle_tags=True)
    assert shuffled == prompts(7, shuffle_tags=True) and shuffled != prompts(8, shuffle_tags=True)
    assert all(p.split(" myemb, ")[0] + " [name], [filewords]" in tpl.lines for p in shuffled)
    tags = [set(p.split("myemb, ")[1].split(", ")) for p in shuffled]
    assert all({"red", "round", "big", "shiny"} < t and len(t) == 5 for t in tags)
    assert any(not p.split("myemb, ")[1].startswith("tag") for p in shuffled)  # really shuffled
    dropped = prompts(7, tag_drop_out=0.5)
    assert dropped == prompts(7, tag_drop_out=0.5)
    counts = [len([t for t in p.split("myemb, ")[1].split(", ") if t]) for p in dropped]
    assert min(counts) < 5 and sum(counts) < 0.8 * 5 * len(counts)
    rng = random.Random(0)
    assert build_prompt(None, rng, "x", "a, b", tag_drop_out=1.0) == ""
    assert build_prompt(None, rng, "x", "a,b") == "a,b"  # untouched without shuffle/dropout (as A1111)


def test_epochs_repeats_and_resume_at_step_n(tmp_path: Path, vae) -> None:
    ds = TrainingDataset(_tagged(tmp_path), vae.encode, width=64, height=64, latent_sampling_method="random")
    tpl = load_template("style_filewords.txt")
    kw = dict(batch_size=2, seed=11, repeats=2, template=tpl, name="s", shuffle_tags=True, tag_drop_out=0.2)
    it = BatchIterator(ds, **kw)
    assert (it.batches_per_epoch, it.steps_per_epoch) == (4, 4)
    run = [it.next_batch() for _ in range(10)]
    assert [(b.epoch, b.epoch_step) for b in run[:5]] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    for e in range(2):  # every image `repeats` times per epoch
        names = sorted(p.name for b in run[4 * e:4 * e + 4] for p in b.paths)
        assert names == sorted([f"im{i}.png" for i in range(4)] * 2)
    assert [p.name for p in run[0].paths + run[1].paths] != [p.name for p in run[4].paths + run[5].paths]

    state = BatchIterator(ds, **kw)
    for _ in range(6):
        state.next_batch()
    saved = json.loads(json.dumps(state.state_dict()))  # what a trainer writes to its state file
    resumed = BatchIterator(ds, **kw)
    resumed.load_state_dict(saved)
    for want in run[6:]:
        got = resumed.next_batch()
        assert got.prompts == want.prompts and got.paths == want.paths and got.position == want.position
        assert torch.equal(got.latents, want.latents)  # the same "random" posterior samples
    seeker = BatchIterator(ds, **{**kw, "gradient_step": 3})
    assert (seeker.gradient_step, seeker.batches_per_epoch, seeker.steps_per_epoch) == (3, 3, 1)
    seeker.seek_step(2)
    assert seeker.position == 6
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator(ds, **{**kw, "batch_size": 1}).load_state_dict(saved)


# ------------------------------------------------------------------------------ log directory

def test_log_dir_layout_and_settings(tmp_path: Path) -> None:
    ld = TrainingLogDir.for_run(tmp_path / "textual_inversion", "my-emb", "embedding", datetime.date(2024, 5, 6))
    assert ld.root == tmp_path / "textual_inversion" / "2024-05-06" / "my-emb"
    ld.create(image_embeddings=True)
    assert sorted(p.name for p in ld.root.iterdir()) == ["embeddings", "image_embeddings", "images"]
    assert ld.snapshot_path(500) == ld.root / "embeddings" / "my-emb-500.pt"
    assert ld.image_path(500) == ld.root / "images" / "my-emb-500.png"
    assert ld.image_embedding_path(500) == ld.root / "image_embeddings" / "my-emb-500.png"
    assert ld.loss_csv.name == "textual_inversion_loss.csv"
    hn = TrainingLogDir.for_run(tmp_path, "hn", "hypernetwork")
    assert hn.snapshots_dir.name == "hypernetworks" and hn.loss_csv.name == "hypernetwork_loss.csv"
    assert hn.root.parent.name == datetime.date.today().strftime("%Y-%m-%d")
    lora = TrainingLogDir.for_run(tmp_path, "l", "lora")
    lora.create(images=False)
    assert [p.name for p in lora.root.iterdir()] == ["loras"] and lora.snapshot_path(3, ".safetensors").name == "l-3.safetensors"
    path = ld.save_settings({"learn_rate": "0.005:100, 1e-5", "data_root": tmp_path, "steps": 100},
                            datetime.datetime(2024, 5, 6, 7, 8, 9))
    assert path.name == "settings-2024-05-06-07-08-09.json"
    assert json.loads(path.read_text()) == {"datetime": "2024-05-06 07:08:09", "learn_rate": "0.005:100, 1e-5",
                                            "data_root": str(tmp_path), "steps": 100}
    for bad in ("", "..", "  "):
        with pytest.raises(ValueError):
            TrainingLogDir.for_run(tmp_path, bad, "embedding")
    with pytest.raises(ValueError, match="unknown training kind"):
        TrainingLogDir.for_run(tmp_path, "x", "dreambooth")


def test_loss_csv_every_n_steps_appends_across_resume(tmp_path: Path) -> None:
    ld = TrainingLogDir.for_run(tmp_path, "e", "embedding")
    w = ld.loss_writer(every=2)
    wrote = [w.write(step, 2, 0.5 / step, 0.005) for step in range(1, 6)]
    assert wrote == [False, True, False, True, False]
    ld.loss_writer(every=2).write(6, 2, 0.01, 1e-5)  # a resumed run, new writer, same file
    text = ld.loss_csv.read_text()
    assert text.splitlines() == ["step,epoch,epoch_step,loss,learn_rate", "2,0,1,0.2500000,0.005",
                                 "4,1,1,0.1250000,0.005", "6,2,1,0.0100000,1e-05"]
    with ld.loss_csv.open("a") as f:
        f.write("8,3,1,0.0")  # a line cut short by a crash...
        f.write("\n9,4,0,nan,0.001\nbad,row\n")
    rows = read_loss_csv(ld.loss_csv)
    assert [(r.step, r.epoch, r.epoch_step, r.learn_rate) for r in rows[:3]] == [(2, 0, 1, 0.005), (4, 1, 1, 0.005),
                                                                               (6, 2, 1, 1e-5)]
    assert [r.step for r in rows] == [2, 4, 6, 9]  # the cut line and the bad row are skipped
    assert math.isnan(rows[-1].loss)
    assert read_loss_csv(tmp_path / "missing.csv") == []
    off = TrainingLogDir.for_run(tmp_path, "off", "hypernetwork").loss_writer(every=0)
    assert not off.write(500, 10, 1.0, 1.0) and not off.path.exists()


# ------------------------------------------------------------------------------ loss, EMA, optimizer step

def _perfect(x0: torch.Tensor, alphas: torch.Tensor, kind: str):
    """A network that knows the clean latents: it answers exactly what the target should be."""
    def predict(noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = alphas[t].view(-1, 1, 1, 1)
        if kind == "epsilon":
            return (noisy - a.sqrt() * x0) / (1 - a).sqrt()
        return (a.sqrt() * noisy - x0) / (1 - a).sqrt()  # v = sqrt(a) * eps - sqrt(1 - a) * x0
    return predict


def test_loss_targets_epsilon_and_v() -> None:
    from webui.models.load import ldm_alphas_cumprod

    alphas = ldm_alphas_cumprod()
    x0 = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for kind in ("epsilon", "v_prediction", "v"):
        name = "epsilon" if kind == "epsilon" else "v"
        right = diffusion_loss(_perfect(x0, alphas, name), x0, alphas, torch.Generator().manual_seed(1),
                               prediction=kind)
        wrong = diffusion_loss(_perfect(x0, alphas, "v" if name == "epsilon" else "epsilon"), x0, alphas,
                               torch.Generator().manual_seed(1), prediction=kind)
        assert float(right) < 1e-6 < 0.01 < float(wrong), kind
    a = torch.tensor(0.36)
    noise = torch.ones(1)
    assert float(diffusion_target(torch.full((1,), 2.0), noise, a, "v_prediction")) == pytest.approx(0.6 - 0.8 * 2)
    with pytest.raises(ValueError, match="unknown prediction type"):
        diffusion_target(x0, x0, a, "sample")


def test_loss_weighting_plain_min_snr_and_alpha_weights() -> None:
    from webui.models.load import ldm_alphas_cumprod

    alphas = ldm_alphas_cumprod()
    x0 = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    zero = lambda noisy, t: torch.zeros_like(noisy)  # noqa: E731

    def draws(seed: int) -> tuple[torch.Tensor, torch.Tensor]:  # what the loss draws, in its order
        g = torch.Generator().manual_seed(seed)
        t = torch.randint(0, 1000, (6,), generator=g)
        return t, torch.randn(x0.shape, generator=g)

    t, noise = draws(5)
    plain = diffusion_loss(zero, x0, alphas, torch.Generator().manual_seed(5))
    assert float(plain) == pytest.approx(float((noise ** 2).mean()), rel=1e-5)
    snr = alphas[t] / (1 - alphas[t])
    per = (noise ** 2).mean(dim=(1, 2, 3))
    gamma = diffusion_loss(zero, x0, alphas, torch.Generator().manual_seed(5), min_snr=5.0)
    assert float(gamma) == pytest.approx(float((per * snr.clamp(max=5) / snr).mean()), rel=1e-5)
    a = alphas[t].view(-1, 1, 1, 1)
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    gamma_v = diffusion_loss(zero, x0, alphas, torch.Generator().manual_seed(5), min_snr=5.0, prediction="v")
    assert float(gamma_v) == pytest.approx(float(((v ** 2).mean(dim=(1, 2, 3)) * snr.clamp(max=5) / (snr + 1)).mean()),
                                           rel=1e-5)
    weight = torch.zeros(6, 1, 8, 8)
    weight[..., 4:] = 2.0  # right half counted double, left half not at all
    weighted = diffusion_loss(zero, x0, alphas, torch.Generator().manual_seed(5), weight=weight)
    assert float(weighted) == pytest.approx(float((noise[..., 4:] ** 2).mean()), rel=1e-5)


def test_ema_and_optimizer_step_moved_out_of_the_tool() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1)
    ema = EMA([lin], decay=0.9)
    before = lin.weight.detach().clone()
    opt = torch.optim.SGD(lin.parameters(), lr=100.0)
    optimizer_step(opt, (lin(torch.ones(4, 3)) ** 2).sum() * 1e3, lin.parameters(), max_grad_norm=1.0)
    moved = lin.weight.detach() - before
    assert 0 < float(moved.norm()) <= 100.0 * 1.0 + 1e-3  # lr x the clipped gradient norm
    ema.update(0)  # decay min(0.9, 1/10) = 0.1: the shadow moves 90 % of the way
    assert torch.allclose(ema.shadow[0].weight, before + 0.9 * moved, atol=1e-6)
    source = (ROOT / "tools" / "train_default_model.py").read_text()
    for name in ("def diffusion_loss", "class EMA", "def optimizer_step", "def lr_at"):
        assert name not in source  # reused by moving, not copying
    assert "from webui.training.diffusion_loss import EMA, diffusion_loss, optimizer_step" in source
