"""Text → conditioning tensors, the way A1111 feeds CLIP.

Prompts of any length are cut into chunks of 75 tokens (+BOS/EOS = 77); each chunk is encoded
separately and the results concatenated along the token axis. `BREAK` starts a new chunk.
Clip skip takes `hidden_states[-N]` and applies the final layer norm (SD1/SD2); SDXL concatenates
the penultimate layers of both encoders and takes the pooled embedding from the first chunk.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

CHUNK_TOKENS = 75
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


@dataclass
class Conditioning:
    cross_attn: torch.Tensor          # [B, 77*k, D]
    pooled: torch.Tensor | None = None  # [B, P] (SDXL)

    @property
    def chunks(self) -> int:
        return self.cross_attn.shape[1] // (CHUNK_TOKENS + 2)


def tokenize_chunks(tokenizer: Any, text: str) -> list[list[int]]:
    """Token ids (without BOS/EOS) in chunks of at most 75; BREAK forces a new chunk."""
    chunks: list[list[int]] = []
    for part in _BREAK.split(text):
        ids = tokenizer(part, add_special_tokens=False, truncation=False)["input_ids"]
        if not ids and chunks:
            continue
        for i in range(0, max(len(ids), 1), CHUNK_TOKENS):
            chunks.append(ids[i:i + CHUNK_TOKENS])
    return chunks or [[]]


def count_tokens(tokenizer: Any, text: str) -> tuple[int, int]:
    """(tokens used, chunk capacity) for the `N/75` counter under the prompt box."""
    chunks = tokenize_chunks(tokenizer, text)
    used = sum(len(c) for c in chunks[:-1]) + len(chunks[-1])
    return used, CHUNK_TOKENS * len(chunks)


def _pad_chunk(tokenizer: Any, ids: list[int]) -> list[int]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    body = [bos] + ids + [eos]
    return body + [pad] * (CHUNK_TOKENS + 2 - len(body))


class PromptEncoder:
    """Encodes prompts for one loaded model. Stateless apart from the model it wraps."""

    def __init__(self, family: str, text_encoders: list[Any], tokenizers: list[Any], device: torch.device,
                 dtype: torch.dtype) -> None:
        self.family = family
        self.text_encoders = text_encoders
        self.tokenizers = tokenizers
        self.device = device
        self.dtype = dtype

    def _encode_one(self, idx: int, ids: torch.Tensor, clip_skip: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        te = self.text_encoders[idx]
        out = te(ids.to(te.device), output_hidden_states=True)
        hs = out.hidden_states
        if self.family == "sdxl":
            # SDXL conditions on the penultimate layer without the final norm; clip skip (CLIP-L only)
            # goes one layer further back per step, as A1111 does with sdxl_clip_l_skip.
            layer = -2 - (max(clip_skip, 1) - 1 if idx == 0 else 0)
            z = hs[layer]
            pooled = out.text_embeds if idx == 1 else None
            return z, pooled
        # SD2 (OpenCLIP) conditions on the penultimate layer by default; SD1 on the last.
        base = 2 if self.family == "sd2" else 1
        n = base + max(clip_skip, 1) - 1
        z = hs[-n] if n > 1 else out.last_hidden_state
        if n > 1:
            # transformers ≥5 puts the norm on CLIPTextModel itself; 4.x on .text_model
            norm = te.final_layer_norm if hasattr(te, "final_layer_norm") else te.text_model.final_layer_norm
            z = norm(z)
        return z, None

    @torch.no_grad()
    def encode(self, prompts: list[str], clip_skip: int = 1) -> Conditioning:
        per_prompt: list[torch.Tensor] = []
        pooled_all: list[torch.Tensor] = []
        for text in prompts:
            feats: list[torch.Tensor] = []
            pooled: torch.Tensor | None = None
            chunk_lists = [tokenize_chunks(tok, text) for tok in self.tokenizers]
            n_chunks = max(len(c) for c in chunk_lists)
            for ci in range(n_chunks):
                parts = []
                for ti, tok in enumerate(self.tokenizers):
                    chunk = chunk_lists[ti][ci] if ci < len(chunk_lists[ti]) else []
                    ids = torch.tensor([_pad_chunk(tok, chunk)], dtype=torch.long)
                    z, p = self._encode_one(ti, ids, clip_skip)
                    parts.append(z)
                    if p is not None and ci == 0:
                        pooled = p
                feats.append(torch.cat(parts, dim=-1))
            per_prompt.append(torch.cat(feats, dim=1)[0])
            if pooled is not None:
                pooled_all.append(pooled[0])
        cross = stack_conds(per_prompt).to(self.device, self.dtype)
        pooled_t = torch.stack(pooled_all).to(self.device, self.dtype) if pooled_all else None
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
