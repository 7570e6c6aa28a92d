"""The U-Net backbone: shapes at 8…128 px, attention placement, preset parameter counts (DDPM's
35.7 M), zero-initialised output, class conditioning, gradient flow, size validation,
determinism, build_unet's cfg / preset handling and activation checkpointing."""
import pytest
import torch

from mstar_engine.networks.unet import UNET_PRESETS, Attention, ResBlock, UNet, build_unet
from mstar_engine.spec import schema

TINY = {"channels": 8, "channel_mult": (1, 2, 2, 2), "res_blocks": 1, "head_channels": 8}


def _tiny(image_size=16, in_channels=3, out_channels=3, seed=0, **kw):
    torch.manual_seed(seed)
    return UNet(in_channels, out_channels, image_size, **{**TINY, **kw})


def _perturb(model, seed=1, scale=0.1):
    """Give every all-zero parameter (zero-initialised convs, GroupNorm biases, null label) random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(scale * torch.randn(p.shape, generator=gen))
    return model


def _inputs(b, c, size, seed=2):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, size, size, generator=gen), 1000 * torch.rand(b, generator=gen)


def _attentions(model):
    """(part, resolution) of every attention block, part in down / middle / up."""
    return [(part, b.attn.resolution) for part in ("down", "middle", "up")
            for b in getattr(model, part) if b.attn is not None]


@pytest.mark.parametrize("size", [8, 16, 32, 64, 128])
def test_output_shape(size):
    model = _perturb(_tiny(size, in_channels=3, out_channels=5, attention_resolutions=(16,))).eval()
    x, t = _inputs(2, 3, size)
    with torch.no_grad():
        out = model(x, t)
    assert out.shape == (2, 5, size, size)
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    with torch.no_grad():  # scalar time broadcasts over the batch
        assert torch.allclose(model(x, torch.tensor(500.0)), model(x, torch.full((2,), 500.0)))


@pytest.mark.parametrize("size, requested, used", [
    (32, (16,), [16]),
    (32, (32, 8), [32, 8]),
    (64, (32, 16, 8), [32, 16, 8]),
    (16, (64, 16), [16]),            # 64 is never reached at 16 px: ignored
    (32, (), []),
])
def test_attention_at_requested_resolutions(size, requested, used):
    r = 2
    model = _tiny(size, res_blocks=r, attention_resolutions=requested)
    assert model.attention_at == used
    found = _attentions(model)
    lowest = size // 8
    assert [res for part, res in found if part == "middle"] == [lowest]
    for part, per_level in (("down", r), ("up", r + 1)):
        got = sorted(res for p, res in found if p == part)
        assert got == sorted(res for res in used for _ in range(per_level)), (part, got)
    # the recorded resolution is the one the block actually sees
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m.resolution, i[0].shape[-1])))
             for m in model.modules() if isinstance(m, Attention)]
    with torch.no_grad():
        model(*_inputs(1, 3, size))
    for h in hooks:
        h.remove()
    assert len(seen) == len(found) and all(a == b for a, b in seen)


def test_attention_heads_and_groups():
    model = UNet(3, 3, 32, channels=32, channel_mult=(1, 2), res_blocks=1, attention_resolutions=(16,),
                 head_channels=16)
    assert {m.heads for m in model.modules() if isinstance(m, Attention)} == {4}   # 64 channels / 16
    assert UNet(3, 3, 32, channels=8, channel_mult=(1, 2), attention_resolutions=(16,)).middle[0].attn.heads == 1
    wide = UNet(3, 3, 16, channels=48, channel_mult=(1, 2), head_channels=48)
    groups = {m.num_channels: m.num_groups for m in wide.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups[48] == 24 and groups[96] == 32
    with pytest.raises(ValueError, match="not a multiple of head_channels"):
        UNet(3, 3, 32, channels=48, channel_mult=(1, 2), attention_resolutions=(16,), head_channels=64)


@pytest.mark.parametrize("scale_shift", [False, True])
def test_resblock_matches_formula(scale_shift):
    torch.manual_seed(0)
    block = _perturb(ResBlock(8, 16, 12, 0.0, scale_shift))
    x, emb = torch.randn(2, 8, 4, 4), torch.randn(2, 12)
    f = torch.nn.functional
    h = block.conv1(f.silu(block.norm1(x)))
    e = block.emb(emb)[:, :, None, None]
    if scale_shift:
        h = block.norm2(h) * (1 + e[:, :16]) + e[:, 16:]
    else:
        h = block.norm2(h + e)
    assert torch.allclose(block(x, emb), block.skip(x) + block.conv2(f.silu(h)), atol=1e-6)


def test_attention_matches_reference():
    torch.manual_seed(0)
    attn = _perturb(Attention(16, 4, 4))
    x = torch.randn(2, 16, 4, 4)
    q, k, v = attn.qkv(attn.norm(x)).reshape(2, 3, 16, 16).unbind(1)   # (B, C, HW) each
    heads = []
    for i in range(4):
        qi, ki, vi = (z[:, 4 * i:4 * i + 4] for z in (q, k, v))       # 4 channels per head
        w = torch.softmax(torch.einsum("bct,bcs->bts", qi, ki) / 2.0, dim=-1)
        heads.append(torch.einsum("bts,bcs->bct", w, vi))
    expect = x + attn.proj(torch.cat(heads, dim=1).reshape(2, 16, 4, 4))
    assert attn.heads == 4 and torch.allclose(attn(x), expect, atol=1e-5)


def test_cifar10_ddpm_preset_parameter_count():
    torch.manual_seed(0)
    model = build_unet(3, 3, 32, preset="cifar10-ddpm")
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 35.7e6) / 35.7e6 < 0.01, f"cifar10-ddpm has {n:,} parameters, Ho et al. report 35.7 M"
    assert n == 35_746_307, f"cifar10-ddpm has {n:,} parameters (expected 35,746,307)"
    assert model.attention_at == [16]
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
    assert not any(m.scale_shift for m in model.modules() if isinstance(m, ResBlock))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32), torch.tensor([500.0]))
    assert out.shape == (1, 3, 32, 32)


@pytest.mark.parametrize("preset, size, expected, adm", [
    ("imagenet64", 64, 276_421_059, 296e6),
    ("imagenet128", 128, 385_013_251, 422e6),
])
def test_imagenet_preset_parameter_counts(preset, size, expected, adm):
    with torch.device("meta"):
        model = build_unet(3, 3, size, preset=preset)
    n = sum(p.numel() for p in model.parameters())
    assert n == expected, f"{preset} has {n:,} parameters (expected {expected:,})"
    assert n < adm  # ADM's count includes residual up/down-sampling blocks, which we do not use
    assert model.attention_at == [32, 16, 8]
    assert all(m.scale_shift for m in model.modules() if isinstance(m, ResBlock))


def test_preset_names_match_schema():
    assert set(UNET_PRESETS) == set(schema.UNET_PRESETS)


def test_fresh_unet_returns_exact_zeros():
    model = _tiny(16, attention_resolutions=(16, 4), num_classes=4)
    x, t = _inputs(3, 3, 16)
    out = model(x, t, torch.tensor([0, 1, 4]))
    assert torch.equal(out, torch.zeros_like(out))
    zeroed = [m.conv2 for m in model.modules() if isinstance(m, ResBlock)] + \
             [m.proj for m in model.modules() if isinstance(m, Attention)] + [model.out[-1]]
    assert all(not m.weight.any() and not m.bias.any() for m in zeroed)
    torch.manual_seed(0)
    loose = UNet(3, 3, 16, **TINY, zero_output=False)
    assert loose(x, t).abs().sum() > 0


def test_class_conditioning():
    model = _perturb(_tiny(16, num_classes=3)).eval()
    x, t = _inputs(4, 3, 16)
    with torch.no_grad():
        by_label = [model(x, t, torch.full((4,), k)) for k in range(3)]
        none = model(x, t)
        null = model(x, t, torch.full((4,), model.null_label))
        negative = model(x, t, torch.tensor(-1))
        mixed = model(x, t, torch.tensor([0, 1, -1, 3]))
    assert not torch.allclose(by_label[0], by_label[1]) and not torch.allclose(by_label[1], by_label[2])
    assert not torch.allclose(none, by_label[0])
    assert torch.equal(none, null) and torch.equal(none, negative)
    assert torch.allclose(mixed[:2], torch.stack([by_label[0][0], by_label[1][1]]), atol=1e-6)
    assert torch.allclose(mixed[2:], none[2:], atol=1e-6)
    with pytest.raises(ValueError, match="class labels"):
        model(x, t, torch.full((4,), 4))
    with pytest.raises(ValueError, match="without classes"):
        _tiny(16)(x, t, torch.zeros(4, dtype=torch.long))


def test_time_dependence():
    model = _perturb(_tiny(16)).eval()
    x, _ = _inputs(2, 3, 16)
    with torch.no_grad():
        assert not torch.allclose(model(x, torch.tensor([10.0, 10.0])), model(x, torch.tensor([900.0, 900.0])))


@pytest.mark.parametrize("scale_shift", [False, True])
def test_gradients_reach_every_parameter(scale_shift):
    model = _perturb(_tiny(16, num_classes=3, attention_resolutions=(16, 4), scale_shift=scale_shift,
                           dropout=0.1)).train()
    x, t = _inputs(4, 3, 16)
    model(x, t, torch.tensor([0, 1, 2, 3])).square().mean().backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("size, levels", [(30, 4), (12, 4), (4, 4), (0, 2), (20, 4)])
def test_invalid_image_size_raises(size, levels):
    with pytest.raises(ValueError, match=rf"image_size {size} is not supported.*multiple of {2 ** (levels - 1)}"):
        UNet(3, 3, size, channels=8, channel_mult=(1,) * levels)


def test_wrong_input_shape_raises():
    model = _tiny(16)
    with pytest.raises(ValueError, match=r"expects input of shape \(B, 3, 16, 16\)"):
        model(torch.zeros(2, 3, 32, 32), torch.zeros(2))
    with pytest.raises(ValueError, match="expects input of shape"):
        model(torch.zeros(2, 3 * 16 * 16), torch.zeros(2))


def test_determinism():
    a, b, c = _perturb(_tiny(16, seed=5)), _perturb(_tiny(16, seed=5)), _perturb(_tiny(16, seed=6))
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], v) for k, v in c.state_dict().items())
    x, t = _inputs(2, 3, 16)
    with torch.no_grad():
        assert torch.equal(a.eval()(x, t), b.eval()(x, t))
        assert not torch.allclose(a(x, t), c.eval()(x, t))


def test_build_unet_cfg_and_presets():
    cfg = schema.UNet(channels=16, channel_mult=[1, 2], res_blocks=1, attention_resolutions=[8], head_channels=16)
    for source in (cfg, {"channels": 16, "channel_mult": [1, 2], "res_blocks": 1, "attention_resolutions": [8],
                         "head_channels": 16}):
        model = build_unet(1, 2, 16, cfg=source, dropout=0.2, num_classes=5)
        assert model.attention_at == [8] and model.conv_in.out_channels == 16 and model.num_classes == 5
        assert len(model.down) == 3 and model.out[-1].out_channels == 2      # 2 res blocks + 1 downsample
        assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.2}
    with torch.device("meta"):
        model = build_unet(3, 3, 32, cfg=cfg, preset="cifar10-ddpm")           # the preset wins over cfg
        assert model.conv_in.out_channels == 128 and model.attention_at == [16]
        assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
        model = build_unet(3, 3, 32, preset="cifar10-ddpm", dropout=0.3)       # an explicit dropout wins
        assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.3}
    assert build_unet(3, 3, 32).conv_in.out_channels == 128                    # UNet defaults
    with pytest.raises(ValueError, match="unknown U-Net preset"):
        build_unet(3, 3, 32, preset="imagenet256")


def test_activation_checkpointing_matches():
    model = _perturb(_tiny(16, attention_resolutions=(8,))).train()
    x, t = _inputs(2, 3, 16)
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.checkpointing = flag
        out = model(x, t)
        out.square().sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.allclose(grads[0][0], grads[1][0])
    assert all(torch.allclose(g0, g1, atol=1e-6) for g0, g1 in zip(grads[0][1], grads[1][1]))
