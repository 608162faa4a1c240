"""The prompt engine inside the loop: chunking, emphasis, schedules per step, AND, embeddings, caching.

Real tiny checkpoints on disk, the real CLIP BPE tokenizer the package ships, the real loop; the
pure parsers have their own table in test_prompt_parser.py.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_models import make_tiny_checkpoint
from webui.engine.loop import PassConfig, run_pass
from webui.engine.noise import NoiseSource
from webui.engine.samplers import resolve_sampler
from webui.memory.devices import DevicePolicy
from webui.models.registry import CheckpointRegistry
from webui.models.tokenizers import load_clip_tokenizer
from webui.prompts.chunking import tokenize_line
from webui.prompts.conditioning import (StaticConditioning, build_conditioning, count_prompt_tokens,
                                        schedule_steps)
from webui.prompts.encoder import EncodeOptions
from webui.services.jobs import JobState
from webui.services.model_service import ModelService
from webui.services.requests import Txt2ImgRequest
from webui.services.txt2img import Txt2ImgService
from webui.settings import Settings

TOK = load_clip_tokenizer(pad_with_eos=True)
BOS, EOS = TOK.bos_token_id, TOK.eos_token_id


def ids(text: str) -> list[int]:
    return TOK(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("prompt")
    (root / "models").mkdir()
    (root / "embeddings").mkdir()
    make_tiny_checkpoint(root / "models" / "sd1.safetensors", family="sd1", seed=21)
    make_tiny_checkpoint(root / "models" / "sdxl.safetensors", family="sdxl", seed=22)
    registry = CheckpointRegistry(root / "models", root / "cache")
    registry.refresh()
    models = ModelService(registry, DevicePolicy.from_flags(["all"], None, "full", True, True),
                          embeddings_dir=root / "embeddings")
    settings = Settings.load(root / "config.json")
    return models, Txt2ImgService(models, settings, root / "out"), settings, root


def generate(svc: Txt2ImgService, **kw):
    req = Txt2ImgRequest(**{"prompt": "a red circle", "steps": 4, "width": 64, "height": 64, "seed": 5,
                            "sampler_name": "Euler", **kw})
    return svc.run(req, JobState("t", "test"), save=False)


# ------------------------------------------------------------------------------------ chunking

def test_comma_backtrack_moves_the_phrase_after_the_last_comma() -> None:
    text = "cat " * 70 + ", " + "dog " * 10
    cat, dog, comma = ids("cat")[0], ids("dog")[0], ids(",")[0]
    tp = tokenize_line(TOK, text)
    assert len(tp.chunks) == 2 and tp.token_count == 75 + 10
    first, second = tp.chunks
    assert first.tokens[:72] == [BOS] + [cat] * 70 + [comma]
    assert first.tokens[72:] == [EOS] * 5  # padded after the comma
    assert second.tokens[:12] == [BOS] + [dog] * 10 + [EOS]
    plain = tokenize_line(TOK, text, comma_backtrack=0)  # option 0: cut exactly at 75
    assert plain.chunks[0].tokens[1:77] == [cat] * 70 + [comma] + [dog] * 4 + [EOS]
    assert all(len(c.tokens) == 77 and len(c.multipliers) == 77 for c in tp.chunks + plain.chunks)


def test_break_and_weights_per_token() -> None:
    tp = tokenize_line(TOK, "(cat:1.5) dog BREAK [bird]")
    assert len(tp.chunks) == 2
    a, b = tp.chunks
    assert a.tokens[:4] == [BOS, ids("cat")[0], ids("dog")[0], EOS]
    assert a.multipliers[:4] == [1.0, 1.5, 1.0, 1.0]
    assert b.tokens[:3] == [BOS, ids("bird")[0], EOS]
    assert b.multipliers[1] == pytest.approx(1 / 1.1)
    # emphasis mode "None": brackets are text
    assert ids("(")[0] in tokenize_line(TOK, "(cat:1.5)", emphasis="None").chunks[0].tokens


def test_token_counter_counts_the_longest_scheduled_variant_and_ands() -> None:
    assert count_prompt_tokens(TOK, "a red circle") == (3, 75)
    assert count_prompt_tokens(TOK, "[a b c d e f g:x:5]", 20) == (7, 75)
    assert count_prompt_tokens(TOK, "cat AND dog bird fish", 20) == (3, 75)
    assert count_prompt_tokens(TOK, "<lora:foo:1> cat") == (1, 75)
    assert count_prompt_tokens(TOK, "cat " * 80) == (80, 150)
    assert count_prompt_tokens(TOK, "a BREAK b") == (76, 150)


# ------------------------------------------------------------------------------------- encoding

def test_emphasis_modes_change_the_conditioning_as_a1111(env) -> None:
    models, *_ = env
    enc = models.load("sd1.safetensors").encoder

    def z(text: str, mode: str = "Original") -> torch.Tensor:
        return enc.encode_text(text, EncodeOptions(1, mode)).cross_attn.float()

    plain, weighted = z("red circle"), z("(red:1.5) circle")
    assert not torch.equal(plain, weighted)
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), abs=1e-5)  # "Original" keeps the mean
    no_norm = z("(red:1.5) circle", "No norm")
    assert torch.allclose(no_norm[1], plain[1] * 1.5, atol=1e-5)  # token 1 = "red", scaled, not renormalised
    assert torch.allclose(no_norm[2], plain[2], atol=1e-6)
    assert torch.equal(z("(red:1.5) circle", "Ignore"), plain)
    assert not torch.equal(z("(red:1.5) circle", "None"), plain)  # brackets and digits become tokens


def test_encodings_are_cached_per_text_and_options(env) -> None:
    models, *_ = env
    enc = models.load("sd1.safetensors").encoder
    text = "a cached prompt, " * 10
    misses = enc.cache_misses
    a = enc.encode_text(text)
    b = enc.encode_text(text)
    assert a is b and enc.cache_misses == misses + 1
    c = enc.encode_text(text, EncodeOptions(clip_skip=2))
    assert c is not a and not torch.equal(c.cross_attn, a.cross_attn)


def test_long_prompt_of_300_tokens_generates(env) -> None:
    models, svc, *_ = env
    models.load("sd1.safetensors")
    long = "red circle, " * 100  # 300 tokens: 4 chunks against a 1-chunk negative prompt
    assert tokenize_line(TOK, long).token_count == 300
    enc = models.current.encoder
    assert enc.encode_text(long).cross_attn.shape[0] == 4 * 77
    res = generate(svc, prompt=long, negative_prompt="blurry")
    short = generate(svc, prompt="red circle", negative_prompt="blurry")
    a, b = np.asarray(res.images[0]), np.asarray(short.images[0])
    assert a.shape == (64, 64, 3) and np.abs(a.astype(int) - b.astype(int)).mean() > 0.5


# ------------------------------------------------------------------------------ schedules in loop

def _record(models, prompt: str, sampler: str, steps: int, negative: str = "") -> tuple[list, object]:
    m = models.load("sd1.safetensors")
    s, sched = resolve_sampler(sampler, None)
    total = schedule_steps(steps, bool(s.options.get("second_order")))
    conds = build_conditioning(m.encoder, [prompt], [negative], total)
    calls: list = []

    def setup(denoiser) -> None:
        denoiser.record = calls

    noise = NoiseSource((4, 8, 8), [1], [1], 0.0, 0, 0)
    run_pass(m.sd.unet, m.sd.family, m.sd.prediction_type, m.schedule,
             PassConfig(s, sched, steps, 7.0, 64, 64), conds, noise, denoiser_setup=setup)
    return calls, m.encoder


def _which(encoder, cond: torch.Tensor, texts: list[str]) -> str:
    found = [t for t in texts if torch.equal(cond, encoder.encode_text(t).cross_attn)]
    assert len(found) == 1, f"conditioning matches {found}"
    return found[0]


def test_prompt_editing_switches_conditioning_at_the_scheduled_step(env) -> None:
    models, *_ = env
    calls, enc = _record(models, "a [red:blue:4] circle", "Euler", 10)
    used = [_which(enc, sc.cond.cross_attn[0], ["a red circle", "a blue circle"]) for _, sc in calls]
    assert [s for s, _ in calls] == list(range(10))
    assert used == ["a red circle"] * 5 + ["a blue circle"] * 5  # step <= 4 uses "from" (A1111)
    calls, enc = _record(models, "a [red:blue:0.25] circle", "Euler", 8)  # fraction: int(0.25*8) = 2
    used = [_which(enc, sc.cond.cross_attn[0], ["a red circle", "a blue circle"]) for _, sc in calls]
    assert used == ["a red circle"] * 3 + ["a blue circle"] * 5


def test_alternation_changes_every_step(env) -> None:
    models, *_ = env
    calls, enc = _record(models, "a [red|blue|green] circle", "Euler", 6)
    texts = ["a red circle", "a blue circle", "a green circle"]
    used = [_which(enc, sc.cond.cross_attn[0], texts) for _, sc in calls]
    # A1111's schedule has an entry per step 1..6 and the loop's step counter starts at 0 with
    # "step <= end_at_step", so the first option is used twice, then one per step
    assert used == ["a red circle", "a red circle", "a blue circle", "a green circle", "a red circle",
                    "a blue circle"]


def test_second_order_sampler_counts_model_calls(env) -> None:
    models, *_ = env
    # Heun, 4 steps: schedule over 8 denoiser calls (A1111), 7 calls made (last step is Euler)
    calls, enc = _record(models, "a [red:blue:0.5] circle", "Heun", 4)
    used = [_which(enc, sc.cond.cross_attn[0], ["a red circle", "a blue circle"]) for _, sc in calls]
    assert len(calls) == 7
    assert used == ["a red circle"] * 5 + ["a blue circle"] * 2


def test_negative_prompt_is_scheduled_too(env) -> None:
    models, *_ = env
    calls, enc = _record(models, "a circle", "Euler", 4, negative="[ugly::2]")
    used = [_which(enc, sc.uncond.cross_attn[0], ["ugly", ""]) for _, sc in calls]
    assert used == ["ugly"] * 3 + [""]


def test_hires_pass_numbers_steps_after_the_first_pass(env) -> None:
    models, *_ = env
    enc = models.load("sd1.safetensors").encoder
    conds = build_conditioning(enc, ["x [a:b:15]"], [""], 10, hires_steps=20)
    texts = [conds.texts_at(step)[0][0] for step in range(20)]
    assert texts == ["x a"] * 6 + ["x b"] * 14


def test_and_parts_are_combined_with_their_weights_in_the_cfg_step(env) -> None:
    models, *_ = env
    m = models.load("sd1.safetensors")
    from webui.engine.denoiser import CFGDenoiser

    def denoise(conds, cfg: float) -> torch.Tensor:
        d = CFGDenoiser(m.sd.unet, m.schedule, m.sd.prediction_type, conds, cfg, 64, 64, m.sd.family)
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
        return d(x, torch.tensor([3.0]))

    enc = m.encoder
    raw = {t: denoise(StaticConditioning(enc.encode([t]), enc.encode([""])), 1.0) for t in ("a cat", " a dog", "")}
    both = build_conditioning(enc, ["a cat AND a dog:0.5"], [""], 4)
    assert both.at(0).parts == [[(0, 1.0), (1, 0.5)]]
    got = denoise(both, 7.0)
    u = raw[""]
    want = u + 7.0 * (raw["a cat"] - u) + 3.5 * (raw[" a dog"] - u)
    assert torch.allclose(got, want, atol=1e-4)


def test_extra_network_tags_are_removed_and_reported(env) -> None:
    models, svc, *_ = env
    models.load("sd1.safetensors")
    tagged = generate(svc, prompt="a red circle <lora:nothing_here:0.8>")
    plain = generate(svc, prompt="a red circle")
    assert np.array_equal(np.asarray(tagged.images[0]), np.asarray(plain.images[0]))
    assert tagged.info["warnings"] == ["Networks not found: lora:nothing_here"]
    assert tagged.info["prompt"] == "a red circle <lora:nothing_here:0.8>"  # infotext keeps what the user wrote
    assert tagged.infotexts[0].startswith("a red circle <lora:nothing_here:0.8>\n")


# ---------------------------------------------------------------------------------- embeddings

def _write_pt_embedding(path: Path, vectors: torch.Tensor, name: str) -> None:
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": name, "step": 123,
                "sd_checkpoint": None, "sd_checkpoint_name": None}, path)


def test_embedding_by_file_name_changes_the_conditioning(env) -> None:
    models, svc, settings, root = env
    m = models.load("sd1.safetensors")
    width = m.sd.text_encoders[0].get_input_embeddings().weight.shape[1]
    emb_file = root / "embeddings" / "shinystyle.pt"
    _write_pt_embedding(emb_file, torch.randn(2, width, generator=torch.Generator().manual_seed(1)), "shinystyle")
    from safetensors.torch import save_file
    save_file({"emb_params": torch.randn(3, width, generator=torch.Generator().manual_seed(2))},
              str(root / "embeddings" / "matte.safetensors"))
    (root / "embeddings" / "broken.pt").write_bytes(b"not a pickle")
    db = m.encoder.embeddings
    db.refresh_if_changed()
    assert set(db.loaded) == {"shinystyle", "matte"} and "broken" in db.skipped
    assert db.loaded["shinystyle"].vectors == 2 and db.loaded["matte"].vectors == 3

    tp = tokenize_line(TOK, "a shinystyle circle", embeddings=db)
    assert tp.chunks[0].tokens[:6] == [BOS, ids("a")[0], 0, 0, ids("circle")[0], EOS]  # two placeholder slots
    with_emb = m.encoder.encode_text("a shinystyle circle").cross_attn
    assert not torch.equal(with_emb, m.encoder.encode_text("a circle").cross_attn)
    weighted = m.encoder.encode_text("a (shinystyle:1.4) circle", EncodeOptions(1, "No norm")).cross_attn
    assert torch.allclose(weighted[2:4], with_emb[2:4] * 1.4, atol=1e-5)  # weighting works on its vectors

    # the same prompt without the word does not change when embeddings are present or not
    before = m.encoder.encode_text("a plain circle").cross_attn.clone()
    _write_pt_embedding(emb_file, torch.randn(2, width, generator=torch.Generator().manual_seed(9)), "shinystyle")
    db.refresh_if_changed()
    assert not torch.equal(m.encoder.encode_text("a shinystyle circle").cross_attn, with_emb)  # new vectors used
    assert torch.equal(m.encoder.encode_text("a plain circle").cross_attn, before)

    res = generate(svc, prompt="a shinystyle circle", negative_prompt="matte")
    sha = hashlib.sha256(emb_file.read_bytes()).hexdigest()[:12]
    sha2 = hashlib.sha256((root / "embeddings" / "matte.safetensors").read_bytes()).hexdigest()[:12]
    assert f'TI hashes: "shinystyle: {sha}, matte: {sha2}"' in res.infotexts[0]


def test_multi_vector_embedding_moves_whole_to_the_next_chunk(env) -> None:
    models, _, _, root = env
    m = models.load("sd1.safetensors")
    width = m.sd.text_encoders[0].get_input_embeddings().weight.shape[1]
    from safetensors.torch import save_file
    save_file({"emb_params": torch.randn(3, width)}, str(root / "embeddings" / "threewide.safetensors"))
    db = m.encoder.embeddings
    db.refresh_if_changed()
    tp = tokenize_line(TOK, "cat " * 74 + "threewide", embeddings=db)  # 3 vectors do not fit after 74 tokens
    assert len(tp.chunks) == 2
    assert tp.chunks[0].tokens[75:] == [EOS, EOS] and not tp.chunks[0].fixes
    assert tp.chunks[1].tokens[:5] == [BOS, 0, 0, 0, EOS] and tp.chunks[1].fixes[0].offset == 0


def test_sdxl_embedding_uses_both_encoders(env) -> None:
    models, _, _, root = env
    m = models.load("sdxl.safetensors")
    wl, wg = (te.get_input_embeddings().weight.shape[1] for te in m.sd.text_encoders)
    from safetensors.torch import save_file
    save_file({"clip_l": torch.randn(2, wl), "clip_g": torch.randn(2, wg)}, str(root / "embeddings" / "xlstyle.safetensors"))
    db = m.encoder.embeddings
    db.refresh_if_changed()
    assert "xlstyle" in db.loaded and "shinystyle" in db.skipped  # SD1 files are not usable with SDXL
    a = m.encoder.encode_text("a xlstyle house")
    b = m.encoder.encode_text("a house")
    assert a.cross_attn.shape == b.cross_attn.shape
    assert not torch.equal(a.cross_attn[:, :wl], b.cross_attn[:, :wl])
    assert not torch.equal(a.cross_attn[:, wl:], b.cross_attn[:, wl:])
    models.load("sd1.safetensors")


def test_styles_fold_into_the_prompts_and_unknown_ones_are_reported(env, tmp_path: Path) -> None:
    models, _, settings, root = env
    from webui.prompts.styles import StyleDatabase

    csv_file = tmp_path / "styles.csv"
    csv_file.write_text('name,prompt,negative_prompt\nframed,"a frame around {prompt}",ugly\nblue,"blue tint",\n',
                        encoding="utf-8")
    svc = Txt2ImgService(models, settings, root / "out2", StyleDatabase(csv_file))
    models.load("sd1.safetensors")
    res = generate(svc, prompt="a cat", negative_prompt="low quality", styles=["framed", "blue", "nope"])
    assert res.infotexts[0].startswith("a frame around a cat, blue tint\nNegative prompt: low quality, ugly\n")
    assert res.info["warnings"] == ["Styles not found: nope"]
    same = generate(svc, prompt="a frame around a cat, blue tint", negative_prompt="low quality, ugly")
    assert np.array_equal(np.asarray(res.images[0]), np.asarray(same.images[0]))
