#!/usr/bin/env python
"""Build the CLIP BPE tokenizer files shipped in ``webui/models/tokenizer/``.

Input: OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (MIT licensed), either directly or from inside an
``open_clip_torch`` wheel.  Output: Hugging Face style ``vocab.json`` + ``merges.txt``, identical in
content to ``openai/clip-vit-large-patch14`` (49408 tokens, 48894 merges).

Why a script: the shipped files are derived data; this makes them reproducible and reviewable.

    python tools/build_clip_tokenizer.py --source open_clip_torch-3.3.0-py3-none-any.whl  # from PyPI
"""

from __future__ import annotations

import argparse
import gzip
import json
import zipfile
from pathlib import Path

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # OpenAI CLIP uses the first 48894 merges of the file
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "webui" / "models" / "tokenizer"


def byte_to_unicode_table() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode character table.

    Printable latin-1 bytes map to themselves; the remaining bytes map to code points 256, 257, ...
    in byte order.  The order of the returned dict is the order CLIP uses for its first 256 tokens.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    # CLIP's vocab order: printable bytes first (in the order above), then the remapped ones.
    ordered = {b: table[b] for b in printable}
    ordered.update({b: table[b] for b in range(256) if b not in ordered})
    return ordered


def read_bpe_text(source: Path) -> str:
    raw = source.read_bytes()
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            raw = zf.read(BPE_MEMBER)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


def build(text: str) -> tuple[dict[str, int], list[str]]:
    lines = text.split("\n")
    merges = lines[1 : 1 + N_MERGES]  # line 0 is the "#version" header
    if len(merges) != N_MERGES or any(len(m.split(" ")) != 2 for m in merges):
        raise ValueError("unexpected BPE file layout")
    chars = list(byte_to_unicode_table().values())
    tokens = chars + [c + "</w>" for c in chars]
    tokens += ["".join(m.split(" ")) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != 49408:
        raise ValueError(f"expected 49408 unique tokens, got {len(vocab)}")
    return vocab, merges


def write(vocab: dict[str, int], merges: list[str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True,
                    help="open_clip wheel, bpe_simple_vocab_16e6.txt.gz or the plain .txt")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    vocab, merges = build(read_bpe_text(args.source))
    write(vocab, merges, args.out)
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
