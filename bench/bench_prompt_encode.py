"""Prompt encoding cost: a 150-token prompt through a full-size SD1 text encoder, cold and cached.

    python bench/bench_prompt_encode.py [--repeats 10]

The text encoder has CLIP ViT-L/14's real shape (768 wide, 12 layers, 123 M parameters; randomly
initialised — timing does not depend on the weights, and nothing is downloaded) with the CLIP BPE
tokenizer the package ships.  Prints the median time of a cold encode (parse + tokenize + 2 chunks
through CLIP + emphasis), of a cached one (what a batch or a re-run pays), their ratio, and the
time of the pure schedule parse for a prompt with editing and alternation.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)

    from transformers import CLIPTextConfig, CLIPTextModel

    from webui.models.tokenizers import load_clip_tokenizer
    from webui.prompts.chunking import tokenize_line
    from webui.prompts.conditioning import _schedule, build_conditioning
    from webui.prompts.encoder import EncodeOptions, PromptEncoder
    from webui.prompts.scheduling import get_learned_conditioning_prompt_schedules

    torch.manual_seed(0)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                      num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                      bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)).eval()
    tok = load_clip_tokenizer(pad_with_eos=True)
    enc = PromptEncoder("sd1", [te], [tok], torch.device("cpu"), torch.float32)
    base = ("a (masterpiece:1.2), best quality, highly detailed photograph of an old lighthouse on a rocky "
            "coast at sunset, dramatic clouds, [warm:cold:0.5] light, waves crashing, ")
    prompt = base
    while tokenize_line(tok, prompt).token_count < 150:
        prompt += "seagulls, mist, "
    n_tokens = tokenize_line(tok, prompt).token_count
    opts = EncodeOptions()

    cold, warm = [], []
    for i in range(args.repeats):
        enc.invalidate()
        _schedule.cache_clear()
        t0 = time.perf_counter()
        build_conditioning(enc, [prompt], [""], 20, opts=opts)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        build_conditioning(enc, [prompt] * 4, [""] * 4, 20, opts=opts)  # a batch of 4 after the first
        warm.append(time.perf_counter() - t0)
    parse = []
    for i in range(args.repeats * 10):
        t0 = time.perf_counter()
        get_learned_conditioning_prompt_schedules([prompt + f" [a|b|c] [x:y:{i % 7 + 2}]"], 20)
        parse.append(time.perf_counter() - t0)
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"prompt of {n_tokens} tokens (2 chunks, one prompt edit), CLIP ViT-L/14-sized encoder, "
          f"{torch.get_num_threads()} threads")
    print(f"  cold encode (parse + tokenize + CLIP + emphasis, both schedule texts): {1000 * c:.1f} ms")
    print(f"  cached, batch of 4 (what a batch or a re-run pays):                   {1000 * w:.2f} ms")
    print(f"  cold / cached: {c / w:.0f}x")
    print(f"  schedule parse alone: {1e6 * statistics.median(parse):.0f} µs")


if __name__ == "__main__":
    main()
