"""Weighted prompt text → 77-token chunks, the way A1111's `tokenize_line` cuts them.

Each chunk holds 75 prompt tokens between BOS and EOS (padded), one emphasis multiplier per token,
and the positions where a textual-inversion embedding replaces placeholder tokens.  `BREAK` starts
a new chunk; when a chunk fills up and a comma lies within the last `comma_backtrack` tokens, the
text after the comma moves to the next chunk (so a phrase is not cut in half); an embedding that
does not fit in what is left of a chunk moves whole to the next one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import torch

from webui.prompts.attention import parse_prompt_attention_for_mode

CHUNK_TOKENS = 75
COMMA_BACKTRACK = 20  # A1111's default `comma_padding_backtrack`


class Embedding(Protocol):
    """A textual-inversion embedding as the prompt path needs it."""
    name: str

    @property
    def vectors(self) -> int: ...

    def vectors_for(self, encoder_index: int) -> torch.Tensor: ...


class EmbeddingLookup(Protocol):
    def find_at(self, tokenizer_index: int, tokens: Sequence[int], position: int) -> tuple[Embedding | None, int]:
        """The embedding whose name's token ids start at ``position`` (longest match), and that many ids."""
        ...


@dataclass
class ChunkFix:
    offset: int  # index among the 75 prompt tokens (BOS not counted)
    embedding: Embedding


@dataclass
class PromptChunk:
    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)
    fixes: list[ChunkFix] = field(default_factory=list)


@dataclass
class TokenizedPrompt:
    chunks: list[PromptChunk]  # each padded to 77 ids (BOS + 75 + EOS)
    token_count: int            # A1111's count: 75 per full chunk plus the tokens of the last one

    @property
    def embeddings_used(self) -> list[Embedding]:
        seen: dict[str, Embedding] = {}
        for c in self.chunks:
            for f in c.fixes:
                seen.setdefault(f.embedding.name, f.embedding)
        return list(seen.values())


def _comma_id(tokenizer: Any) -> int | None:
    ids = tokenizer(",", add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def tokenize_line(tokenizer: Any, text: str, *, emphasis: str = "Original", embeddings: EmbeddingLookup | None = None,
                  tokenizer_index: int = 0, comma_backtrack: int = COMMA_BACKTRACK) -> TokenizedPrompt:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    comma = _comma_id(tokenizer)
    parsed = parse_prompt_attention_for_mode(text, emphasis)
    chunks: list[PromptChunk] = []
    chunk = PromptChunk()
    token_count = 0
    last_comma = -1

    def next_chunk(is_last: bool = False) -> None:
        nonlocal chunk, token_count, last_comma
        token_count += len(chunk.tokens) if is_last else CHUNK_TOKENS
        fill = CHUNK_TOKENS - len(chunk.tokens)
        # Padding: EOS first, then the tokenizer's pad id (EOS for CLIP-L, 0 for OpenCLIP)
        if fill > 0:
            chunk.tokens += [eos] + [pad] * (fill - 1)
            chunk.multipliers += [1.0] * fill
        chunk.tokens = [bos] + chunk.tokens + [eos if fill <= 0 else pad]
        chunk.multipliers = [1.0] + chunk.multipliers + [1.0]
        chunks.append(chunk)
        chunk = PromptChunk()
        last_comma = -1

    for part, weight in parsed:
        if part == "BREAK" and weight == -1:
            next_chunk()
            continue
        ids = tokenizer(part, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        pos = 0
        while pos < len(ids):
            token = ids[pos]
            if token == comma:
                last_comma = len(chunk.tokens)
            elif (comma_backtrack and len(chunk.tokens) == CHUNK_TOKENS and last_comma != -1
                  and len(chunk.tokens) - last_comma <= comma_backtrack):
                cut = last_comma + 1
                moved_t, moved_m = chunk.tokens[cut:], chunk.multipliers[cut:]
                moved_f = [ChunkFix(f.offset - cut, f.embedding) for f in chunk.fixes if f.offset >= cut]
                chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                chunk.fixes = [f for f in chunk.fixes if f.offset < cut]
                next_chunk()
                chunk.tokens, chunk.multipliers, chunk.fixes = moved_t, moved_m, moved_f
            if len(chunk.tokens) == CHUNK_TOKENS:
                next_chunk()
            emb, used = embeddings.find_at(tokenizer_index, ids, pos) if embeddings else (None, 0)
            if emb is None:
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)
                pos += 1
                continue
            width = min(emb.vectors, CHUNK_TOKENS)
            if len(chunk.tokens) + width > CHUNK_TOKENS:
                next_chunk()
            chunk.fixes.append(ChunkFix(len(chunk.tokens), emb))
            chunk.tokens += [0] * width  # placeholders; the encoder writes the vectors over them
            chunk.multipliers += [weight] * width
            pos += used
    if chunk.tokens or not chunks:
        next_chunk(is_last=True)
    return TokenizedPrompt(chunks, token_count)
