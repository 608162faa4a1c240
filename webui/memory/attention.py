"""Which attention kernel the UNet uses: torch's scaled-dot-product attention (default), SDP
without the memory-efficient kernel, or xformers when it is installed; optionally computed in
fp32 on fp16 weights (`--upcast-sampling`, for cards whose fp16 attention overflows)."""
from __future__ import annotations

import logging

import contextlib
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

BACKENDS = ("sdp", "sdp-no-mem", "xformers")


class UpcastSDPAProcessor:
    """diffusers' attention computed with q, k, v in fp32 (weights and projections stay half)."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        image = hidden_states.ndim == 4
        if image:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, tokens, _ = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, tokens, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1]).float()
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        head_dim = k.shape[-1] // attn.heads
        q, k, v = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2).float() for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(residual.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if image:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def configure_attention(unet: torch.nn.Module, backend: str = "sdp", upcast: bool = False) -> str:
    """Set every attention layer's processor; returns the backend really in use (xformers falls
    back to SDP, with the reason, when the package is missing)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    if backend == "xformers" and not upcast:
        try:
            import xformers.ops  # noqa: F401
            unet.enable_xformers_memory_efficient_attention()
            return "xformers"
        except Exception as e:  # noqa: BLE001 - missing or broken xformers: SDP is always there
            log.warning(f"xformers unavailable ({type(e).__name__}: {e}); using scaled-dot-product attention")
            backend = "sdp"
    unet.set_attn_processor(UpcastSDPAProcessor() if upcast else AttnProcessor2_0())
    return ("sdp-no-mem" if backend == "sdp-no-mem" else "sdp") + (" (fp32 attention)" if upcast else "")


def attention_context(backend: str) -> contextlib.AbstractContextManager:
    """`--opt-sdp-no-mem-attention`: SDP may use the flash or the math kernel, not the
    memory-efficient one (whose results vary from run to run on some cards)."""
    if backend.startswith("sdp-no-mem"):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH])
    return contextlib.nullcontext()
