"""Text → conditioning tensors, the way A1111 feeds CLIP.

A prompt is parsed for emphasis, cut into 77-token chunks (`chunking.tokenize_line`: 75 tokens +
BOS/EOS, `BREAK`, comma backtracking, embeddings kept whole), each chunk is encoded on its own and
the results are concatenated along the token axis.  Emphasis multiplies token vectors after the
transformer (mode "Original" then restores the mean).  Clip skip takes `hidden_states[-N]` and
applies the final layer norm (SD1/SD2); SDXL concatenates the penultimate layers of both encoders
and takes the pooled embedding from the first chunk.  Encodings are cached per (text, clip skip,
emphasis, embeddings, text-encoder version), so a batch or a re-run does not encode twice.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from webui.memory.bounded_cache import MB, BoundedCache, tensor_bytes
from webui.prompts.attention import apply_emphasis
from webui.prompts.chunking import CHUNK_TOKENS, COMMA_BACKTRACK, Embedding, EmbeddingLookup, TokenizedPrompt, tokenize_line

CACHE_SIZE = 128  # encodings kept per model, and at most CACHE_MB of tensors (SDXL's are 10x SD1's)
CACHE_MB = 64


@dataclass
class Conditioning:
    cross_attn: torch.Tensor          # [B, 77*k, D]
    pooled: torch.Tensor | None = None  # [B, P] (SDXL)

    @property
    def chunks(self) -> int:
        return self.cross_attn.shape[1] // (CHUNK_TOKENS + 2)


@dataclass(frozen=True)
class EncodeOptions:
    """Settings that change how a text encodes (part of the cache key)."""
    clip_skip: int = 1
    emphasis: str = "Original"
    comma_backtrack: int = COMMA_BACKTRACK
    sdxl_clip_l_skip: bool = False  # A1111's option: clip skip applies to SDXL's CLIP-L only when set


@dataclass
class EncodedText:
    """One prompt text, encoded: [77*k, D] (+ pooled [P] for SDXL) and the embeddings it used."""
    cross_attn: torch.Tensor
    pooled: torch.Tensor | None
    embeddings: list[Embedding] = field(default_factory=list)
    token_count: int = 0


def count_tokens(tokenizer: Any, text: str, embeddings: EmbeddingLookup | None = None) -> tuple[int, int]:
    """(tokens used, chunk capacity) for the `N/75` counter under the prompt box (A1111's count)."""
    tp = tokenize_line(tokenizer, text, embeddings=embeddings)
    return tp.token_count, CHUNK_TOKENS * max(1, len(tp.chunks))


def _final_norm(te: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    # transformers ≥5 puts the norm on CLIPTextModel itself; 4.x on .text_model
    return te.final_layer_norm if hasattr(te, "final_layer_norm") else te.text_model.final_layer_norm


class PromptEncoder:
    """Encodes prompts for one loaded model; owns only a cache of its own results."""

    def __init__(self, family: str, text_encoders: list[Any], tokenizers: list[Any], device: torch.device,
                 dtype: torch.dtype, embeddings: EmbeddingLookup | None = None,
                 placement: Callable[[], Any] | None = None) -> None:
        self.family = family
        # context that puts the text encoders on the device (the memory manager's); none: they are there
        self.placement = placement or contextlib.nullcontext
        self.text_encoders = text_encoders
        self.tokenizers = tokenizers
        self.device = device
        self.dtype = dtype
        self.embeddings = embeddings
        self.version = 0  # bump when text-encoder weights change (networks): invalidates the cache
        self.cache: BoundedCache[EncodedText] = BoundedCache(
            "prompt encoding", CACHE_MB * MB, CACHE_SIZE, size_of=lambda e: tensor_bytes((e.cross_attn, e.pooled)))
        self._lock = threading.Lock()

    @property
    def cache_hits(self) -> int:
        return self.cache.hits

    @property
    def cache_misses(self) -> int:
        return self.cache.misses

    def invalidate(self) -> None:
        with self._lock:
            self.version += 1
        self.cache.clear()

    # ---- tokens ----
    def tokenize(self, text: str, opts: EncodeOptions = EncodeOptions(),
                 embeddings: EmbeddingLookup | None = None) -> list[TokenizedPrompt]:
        lookup = self.embeddings if embeddings is None else embeddings
        return [tokenize_line(tok, text, emphasis=opts.emphasis, embeddings=lookup, tokenizer_index=i,
                              comma_backtrack=opts.comma_backtrack)
                for i, tok in enumerate(self.tokenizers)]

    # ---- encoding ----
    def _run_encoder(self, idx: int, chunk_ids: torch.Tensor, fixes: list[list[tuple[int, torch.Tensor]]],
                     clip_skip: int, sdxl_clip_l_skip: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """chunk_ids [k, 77]; fixes[c] = (token index, vectors) to write over placeholder embeddings."""
        te = self.text_encoders[idx]
        handle = None
        if any(fixes):
            def write_vectors(_module: Any, _inp: Any, out: torch.Tensor) -> torch.Tensor:
                out = out.clone()
                for c, items in enumerate(fixes):
                    for at, vec in items:
                        n = min(vec.shape[0], out.shape[1] - at)
                        out[c, at:at + n] = vec[:n].to(out.device, out.dtype)
                return out
            handle = te.get_input_embeddings().register_forward_hook(write_vectors)
        try:
            out = te(chunk_ids.to(self.device), output_hidden_states=True)
        finally:
            if handle is not None:
                handle.remove()
        hs = out.hidden_states
        if self.family == "sdxl":
            # SDXL conditions on the penultimate layer without the final norm. A1111 applies clip skip only
            # with sdxl_clip_l_skip, to CLIP-L only, as hidden_states[-clip_skip] (1 = the last layer, unnormed)
            layer = -max(clip_skip, 1) if (idx == 0 and sdxl_clip_l_skip) else -2
            return hs[layer], (out.text_embeds if idx == 1 else None)
        # SD2 (OpenCLIP) conditions on the penultimate layer by default; SD1 on the last.
        n = (2 if self.family == "sd2" else 1) + max(clip_skip, 1) - 1
        if n <= 1:
            return out.last_hidden_state, None
        return _final_norm(te)(hs[-n]), None

    def encode_text(self, text: str, opts: EncodeOptions = EncodeOptions()) -> EncodedText:
        key = (text, opts, self.version, getattr(self.embeddings, "version", 0))
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        with self.placement():
            enc = self._encode_uncached(text, opts)
        self.cache.put(key, enc)
        return enc

    @torch.no_grad()
    def _encode_uncached(self, text: str, opts: EncodeOptions) -> EncodedText:
        return self._encode_tokens(text, opts, None)

    def encode_for_training(self, prompts: list[str], embeddings: EmbeddingLookup,
                            opts: EncodeOptions = EncodeOptions()) -> Conditioning:
        """Textual-inversion training: like `encode`, but with gradients and no cache, looking names
        up in ``embeddings`` (which may hold the vectors being trained: their gradients flow back
        through the text encoders).  The caller makes the text encoders resident."""
        return stack_encoded([self._encode_tokens(t, opts, embeddings) for t in prompts])

    def _encode_tokens(self, text: str, opts: EncodeOptions, embeddings: EmbeddingLookup | None) -> EncodedText:
        per_tok = self.tokenize(text, opts, embeddings)
        n_chunks = max(len(tp.chunks) for tp in per_tok)
        parts: list[torch.Tensor] = []
        pooled = None
        for idx, tp in enumerate(per_tok):
            chunks = list(tp.chunks)
            while len(chunks) < n_chunks:  # encoders disagreeing on chunk count: pad with empty chunks
                chunks.append(tokenize_line(self.tokenizers[idx], "").chunks[0])
            ids = torch.tensor([c.tokens for c in chunks], dtype=torch.long)
            mult = torch.tensor([c.multipliers for c in chunks], dtype=torch.float32)
            fixes = [[(f.offset + 1, f.embedding.vectors_for(idx)) for f in c.fixes] for c in chunks]
            z, p = self._run_encoder(idx, ids, fixes, opts.clip_skip, opts.sdxl_clip_l_skip)
            # Emphasis per chunk, as A1111 applies it chunk by chunk
            z = torch.stack([apply_emphasis(z[c:c + 1].float(), mult[c:c + 1].to(z.device), opts.emphasis)[0]
                             for c in range(z.shape[0])])
            parts.append(z.reshape(-1, z.shape[-1]))
            if p is not None:
                pooled = p[0]  # first chunk's pooled embedding (A1111)
        cross = torch.cat(parts, dim=-1).to(self.device, self.dtype)
        pooled_t = pooled.to(self.device, self.dtype) if pooled is not None else None
        used: dict[str, Embedding] = {}
        for tp in per_tok:
            for e in tp.embeddings_used:
                used.setdefault(e.name, e)
        return EncodedText(cross, pooled_t, list(used.values()), per_tok[0].token_count)

    def encode(self, prompts: list[str], clip_skip: int = 1, emphasis: str = "Original") -> Conditioning:
        """Plain (unscheduled) conditioning for a batch of texts."""
        opts = EncodeOptions(clip_skip, emphasis)
        encoded = [self.encode_text(t, opts) for t in prompts]
        return stack_encoded(encoded)


def stack_encoded(encoded: list[EncodedText]) -> Conditioning:
    cross = stack_conds([e.cross_attn for e in encoded])
    pooled = [e.pooled for e in encoded]
    pooled_t = torch.stack(pooled) if all(p is not None for p in pooled) else None  # type: ignore[arg-type]
    return Conditioning(cross, pooled_t)


def stack_conds(conds: list[torch.Tensor]) -> torch.Tensor:
    """Stack [T_i, D] tensors of different chunk counts by repeating each one's last vector (A1111's rule)."""
    n = max(c.shape[0] for c in conds)
    out = []
    for c in conds:
        if c.shape[0] < n:
            c = torch.cat([c, c[-1:].repeat(n - c.shape[0], 1)])
        out.append(c)
    return torch.stack(out)
