"""CLIP tokenizers built from the BPE data shipped in ``webui/models/tokenizer/`` (never from a hub).

The files are produced by ``tools/build_clip_tokenizer.py`` from OpenAI's ``bpe_simple_vocab_16e6``
(MIT); SD1, SD2 (OpenCLIP ViT-H) and SDXL (CLIP-L + OpenCLIP bigG) all use this same vocabulary.
"""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPTokenizer

TOKENIZER_DIR = Path(__file__).resolve().parent / "tokenizer"
MAX_LENGTH = 77
BOS_ID = 49406
EOS_ID = 49407


def load_clip_tokenizer(pad_with_eos: bool) -> CLIPTokenizer:
    """Return a fresh CLIP tokenizer (77 tokens).

    ``pad_with_eos=True``: pad with ``<|endoftext|>`` (SD1 text encoder, SDXL's CLIP-L).
    ``pad_with_eos=False``: pad with ``!`` (id 0), as OpenCLIP does (SD2, SDXL's bigG).
    """
    vocab = TOKENIZER_DIR / "vocab.json"
    merges = TOKENIZER_DIR / "merges.txt"
    if not vocab.is_file() or not merges.is_file():
        raise FileNotFoundError(f"CLIP tokenizer data missing from {TOKENIZER_DIR}; run tools/build_clip_tokenizer.py")
    tok = CLIPTokenizer(vocab=str(vocab), merges=str(merges), model_max_length=MAX_LENGTH)
    if not pad_with_eos:
        # Set after construction on purpose: passing pad_token="!" to the constructor registers "!" as
        # an added special token, so "!!" in a prompt would split into [0, 0] instead of the real BPE
        # token 748 that OpenCLIP (and A1111) produce.  Setting it here only changes the pad id.
        tok.pad_token = "!"
    return tok
