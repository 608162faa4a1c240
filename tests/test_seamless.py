"""Seamless tiling (webui.engine.seamless): circular padding on a tiny diffusers UNet and VAE for the
duration of a block, everything restored afterwards, a decode that wraps around, and the memory
manager's group-offloading hooks."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from webui.engine.seamless import circular_padding, seamless, seamless_convs


@pytest.fixture(scope="module")
def tiny() -> Any:
    from tiny_models import build_tiny_models
    return build_tiny_models("sd1", seed=3)


def modes(module: torch.nn.Module) -> list[tuple[str, Any]]:
    return [(m.padding_mode, m._reversed_padding_repeated_twice) for m in module.modules()
            if isinstance(m, torch.nn.Conv2d)]


def unet_out(unet: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        return unet(x, 500, encoder_hidden_states=ctx).sample


def decode(vae: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vae.decode(z).sample


def periodic_latent(width: int = 8, height: int = 6) -> torch.Tensor:
    """One period of a latent that repeats along x: a smooth wave plus noise, as a circular tile."""
    g = torch.Generator().manual_seed(1)
    x = torch.arange(width) * (2 * torch.pi / width)
    wave = torch.stack([torch.sin(x + k) for k in range(4)])[None, :, None, :].expand(1, 4, height, width)
    return wave + 0.3 * torch.randn(1, 4, height, width, generator=g)


def edge_ratio(img: torch.Tensor) -> float:
    """|first column - last column| over the mean |column j - column j+1|: about 1 for a picture
    whose right edge continues into its left edge, large for a seam."""
    cols = img[0]
    neighbour = (cols[..., 1:] - cols[..., :-1]).abs().mean()
    wrap = (cols[..., 0] - cols[..., -1]).abs().mean()
    return float(wrap / neighbour)


def test_outputs_differ_inside_and_are_restored_after(tiny: Any) -> None:
    before_modes = modes(tiny.unet) + modes(tiny.vae)
    plain = unet_out(tiny.unet)
    with seamless(tiny.unet, tiny.vae) as changed:
        assert changed and all(c.padding_mode == "circular" for c in changed)
        tiled = unet_out(tiny.unet)
    assert not torch.allclose(plain, tiled, atol=1e-4)
    assert torch.equal(unet_out(tiny.unet), plain)  # bit-exact afterwards
    after = modes(tiny.unet) + modes(tiny.vae)
    assert [m for m, _ in after] == [m for m, _ in before_modes] and all(m == "zeros" for m, _ in after)
    assert all(a is b for (_, a), (_, b) in zip(after, before_modes))  # the very same padding objects


def test_restored_after_an_exception_and_when_nested(tiny: Any) -> None:
    conv = tiny.unet.conv_in
    rp = conv._reversed_padding_repeated_twice
    with pytest.raises(RuntimeError, match="boom"):
        with seamless(tiny.unet):
            assert conv.padding_mode == "circular"
            raise RuntimeError("boom")
    assert conv.padding_mode == "zeros" and conv._reversed_padding_repeated_twice is rp
    with seamless(tiny.unet):
        with seamless(tiny.unet, tiny.unet):  # the same module twice: each conv changed once
            assert conv.padding_mode == "circular"
        assert conv.padding_mode == "circular"
    assert conv.padding_mode == "zeros"
    with seamless(tiny.unet, enabled=False) as changed:
        assert changed == [] and conv.padding_mode == "zeros"


@pytest.mark.filterwarnings("ignore:.*LoRACompatibleConv.*:FutureWarning")
def test_which_convs_and_their_padding() -> None:
    from diffusers.models.lora import LoRACompatibleConv

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 1),
                              torch.nn.Conv2d(4, 4, (3, 5), padding="same"), torch.nn.Conv2d(4, 4, 3, padding="valid"),
                              torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
                              LoRACompatibleConv(4, 4, 3, padding=1), torch.nn.ConvTranspose2d(4, 4, 3, padding=1))
    net[0].padding = (2, 1)  # changed after construction: the pad amounts follow it
    assert circular_padding(net[0]) == [1, 1, 2, 2] and circular_padding(net[2]) == [2, 2, 1, 1]
    assert seamless_convs(net, None) == [net[0], net[2], net[4], net[5]]
    x = torch.randn(1, 3, 9, 9)
    with seamless(net):
        assert [m.padding_mode for m in net[:6]] == ["circular", "zeros", "circular", "zeros", "circular", "circular"]
        assert net[0]._reversed_padding_repeated_twice == [1, 1, 2, 2]
        h = net[0](x)
        ref = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 2, 2), mode="circular"),
                                         net[0].weight, net[0].bias)
        assert torch.allclose(h, ref, atol=1e-6)
        y = net[5](h)  # diffusers' LoRA-compatible conv pads circularly too
        assert torch.allclose(y, torch.nn.functional.conv2d(torch.nn.functional.pad(h, (1, 1, 1, 1), mode="circular"),
                                                             net[5].weight, net[5].bias), atol=1e-6)
    assert [m.padding_mode for m in net[:6]] == ["zeros"] * 4 + ["reflect", "zeros"]
    assert tuple(net[0]._reversed_padding_repeated_twice) == (1, 1, 1, 1)  # as built (padding=1), not recomputed


def test_seamless_decode_is_periodic_on_the_tiny_vae(tiny: Any) -> None:
    """Every conv circular makes the decoder shift-equivariant on the torus (nearest upsampling,
    global GroupNorm and attention keep that): a latent rolled by one column decodes to the picture
    rolled by 8 pixels, and a latent of two periods decodes to the one-period picture tiled twice.
    Zero padding breaks both."""
    z = periodic_latent()
    plain = decode(tiny.vae, z)
    with seamless(tiny.vae):
        tiled = decode(tiny.vae, z)
        shifted = decode(tiny.vae, torch.roll(z, 1, dims=-1))
        two = decode(tiny.vae, torch.cat([z, z], -1))
    assert torch.allclose(shifted, torch.roll(tiled, 8, dims=-1), atol=1e-4)
    assert torch.allclose(two, torch.cat([tiled, tiled], -1), atol=1e-4)
    assert not torch.allclose(decode(tiny.vae, torch.roll(z, 1, dims=-1)), torch.roll(plain, 8, dims=-1), atol=1e-2)
    assert not torch.allclose(decode(tiny.vae, torch.cat([z, z], -1)), torch.cat([plain, plain], -1), atol=1e-2)


def test_trained_vae_left_and_right_edges_continue_each_other() -> None:
    """On a trained VAE (the built-in demo model's; a random one decodes to noise, where zero
    padding darkens both edges alike and column differences say nothing) a periodic latent
    decodes, with seamless, to a picture whose last column steps into its first like any two
    neighbouring columns; without, the edges jump."""
    from conftest import ROOT
    from webui.models.load import load_checkpoint

    vae = load_checkpoint(ROOT / "webui" / "builtin_models" / "shapes-demo-v4.safetensors").vae.float().eval()
    z = periodic_latent(8, 8)
    plain = decode(vae, z)
    with seamless(vae):
        tiled = decode(vae, z)
    for axis_last in (False, True):  # columns, then rows (both axes wrap, as in A1111)
        t, p = (tiled, plain) if not axis_last else (tiled.transpose(-1, -2), plain.transpose(-1, -2))
        seam_tiled, seam_plain = edge_ratio(t), edge_ratio(p)
        assert 0.5 < seam_tiled < 1.6 and seam_plain > 2 * seam_tiled, (axis_last, seam_tiled, seam_plain)


def test_works_under_group_offloading_hooks(tiny: Any) -> None:
    """The memory manager streams blocks through diffusers' group-offloading hooks; the hooks wrap
    forward, the convs still read padding_mode."""
    from webui.memory.streaming import start_streaming, stop_streaming, units_of

    z = periodic_latent()
    with seamless(tiny.vae):
        want = decode(tiny.vae, z)
    plain = decode(tiny.vae, z)
    units, _ = units_of(tiny.vae.decoder)
    cpu = torch.device("cpu")
    for u in units:
        start_streaming(u, cpu, cpu)
    try:
        with seamless(tiny.vae):
            got = decode(tiny.vae, z)
        again = decode(tiny.vae, z)
    finally:
        for u in units:
            stop_streaming(u, cpu)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(again, plain, atol=1e-5)
