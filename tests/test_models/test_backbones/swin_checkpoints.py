"""Generate random Swin checkpoints with the exact layouts of the real files.

* official: Microsoft ``swin_tiny_patch4_window7_224_22k.pth`` built by hand
  from ``microsoft/Swin-Transformer/models/swin_transformer.py`` naming:
  ``{'model': sd}`` with ``relative_position_index`` buffers, ``attn_mask`` for
  the shifted blocks whose map is larger than the window, ``norm``, ``head``.
* timm / mmpretrain / mmseg: the installed libraries' own modules (random
  init) so the names and shapes are whatever those libraries really use.

Every parameter gets a seeded random value (LayerNorm weights around 1, other
weights scaled by ``fan_in ** -0.5``, relative position tables with std 0.5)
so that any wrong key, permutation or layout changes the features.
"""
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import nn

import ditask_mm  # noqa: F401  (mmcv patches before mmseg/mmpretrain)


@dataclass(frozen=True)
class SwinArch:
    """The few hyper-parameters all four implementations share."""
    embed_dims: int = 96
    depths: Tuple[int, ...] = (2, 2, 6, 2)
    num_heads: Tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 4
    img_size: int = 224
    mlp_ratio: int = 4

    def dims(self, stage: int) -> int:
        return self.embed_dims * 2 ** stage


SWIN_T = SwinArch()
# Cheap stand-in with the same structure (4 stages, shifted blocks in each).
SWIN_NANO = SwinArch(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))


def random_tensor(name: str, shape, gen: torch.Generator) -> torch.Tensor:
    """A seeded value for parameter ``name``, scaled so activations stay O(1)."""
    shape = tuple(shape)
    if name.endswith('relative_position_bias_table'):
        return torch.randn(shape, generator=gen) * 0.5
    if len(shape) == 1 and name.endswith('weight'):  # LayerNorm scale
        return 1 + 0.2 * torch.randn(shape, generator=gen)
    if len(shape) == 1:  # biases, LayerNorm shift
        return 0.1 * torch.randn(shape, generator=gen)
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    return torch.randn(shape, generator=gen) * fan_in ** -0.5


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every parameter of ``module`` (not its buffers) in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(random_tensor(name, param.shape, gen))
    return module


# ----------------------------------------------------------------- official
def official_relative_position_index(window: int) -> torch.Tensor:
    """``(dh + W - 1) * (2W - 1) + (dw + W - 1)`` for every token pair."""
    rows = torch.arange(window).repeat_interleave(window)
    cols = torch.arange(window).repeat(window)
    dh = rows[:, None] - rows[None, :] + window - 1
    dw = cols[:, None] - cols[None, :] + window - 1
    return dh * (2 * window - 1) + dw


def official_attn_mask(resolution: int, window: int, shift: int) -> torch.Tensor:
    """The official shifted-window mask, shape ``(nW, W*W, W*W)``, 0 / -100."""
    region = torch.zeros(resolution, resolution)
    bounds = (0, resolution - window, resolution - shift, resolution)
    label = 0
    for h in range(3):
        for w in range(3):
            region[bounds[h]:bounds[h + 1], bounds[w]:bounds[w + 1]] = label
            label += 1
    n = resolution // window
    windows = region.reshape(n, window, n, window).permute(0, 2, 1, 3).reshape(n * n, -1)
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


def make_official_checkpoint(arch: SwinArch = SWIN_T, num_classes: int = 21841,
                             seed: int = 0) -> dict:
    """``{'model': sd}`` as in ``swin_tiny_patch4_window7_224_22k.pth`` (190 keys)."""
    gen = torch.Generator().manual_seed(seed)
    sd: Dict[str, torch.Tensor] = {}

    def param(name, *shape):
        sd[name] = random_tensor(name, shape, gen)

    c0, p = arch.embed_dims, arch.patch_size
    param('patch_embed.proj.weight', c0, 3, p, p)
    param('patch_embed.proj.bias', c0)
    param('patch_embed.norm.weight', c0)
    param('patch_embed.norm.bias', c0)
    res = arch.img_size // p
    last = len(arch.depths) - 1
    for i, (depth, heads) in enumerate(zip(arch.depths, arch.num_heads)):
        dim = arch.dims(i)
        # the official block shrinks the window to the map and stops shifting
        window = min(arch.window_size, res)
        shifts_allowed = res > arch.window_size
        for j in range(depth):
            pre = f'layers.{i}.blocks.{j}.'
            if j % 2 == 1 and shifts_allowed:
                sd[pre + 'attn_mask'] = official_attn_mask(res, window, arch.window_size // 2)
            param(pre + 'norm1.weight', dim)
            param(pre + 'norm1.bias', dim)
            param(pre + 'attn.relative_position_bias_table', (2 * window - 1) ** 2, heads)
            sd[pre + 'attn.relative_position_index'] = official_relative_position_index(window)
            param(pre + 'attn.qkv.weight', 3 * dim, dim)
            param(pre + 'attn.qkv.bias', 3 * dim)
            param(pre + 'attn.proj.weight', dim, dim)
            param(pre + 'attn.proj.bias', dim)
            param(pre + 'norm2.weight', dim)
            param(pre + 'norm2.bias', dim)
            param(pre + 'mlp.fc1.weight', arch.mlp_ratio * dim, dim)
            param(pre + 'mlp.fc1.bias', arch.mlp_ratio * dim)
            param(pre + 'mlp.fc2.weight', dim, arch.mlp_ratio * dim)
            param(pre + 'mlp.fc2.bias', dim)
        if i < last:
            param(f'layers.{i}.downsample.reduction.weight', 2 * dim, 4 * dim)
            param(f'layers.{i}.downsample.norm.weight', 4 * dim)
            param(f'layers.{i}.downsample.norm.bias', 4 * dim)
            res //= 2
    param('norm.weight', arch.dims(last))
    param('norm.bias', arch.dims(last))
    param('head.weight', num_classes, arch.dims(last))
    param('head.bias', num_classes)
    return {'model': sd}


# --------------------------------------------------------------- libraries
def build_timm(arch: SwinArch = SWIN_T, img_size: int = None, num_classes: int = 1000,
               **kwargs) -> nn.Module:
    """timm's ``SwinTransformer`` (same keys as ``swin_tiny_patch4_window7_224``)."""
    from timm.models.swin_transformer import SwinTransformer
    return SwinTransformer(img_size=img_size or arch.img_size, patch_size=arch.patch_size,
                           embed_dim=arch.embed_dims, depths=arch.depths,
                           num_heads=arch.num_heads, window_size=arch.window_size,
                           mlp_ratio=arch.mlp_ratio, num_classes=num_classes, **kwargs)


def build_mmseg(arch: SwinArch = SWIN_T, window_size: int = None,
                out_indices=(0, 1, 2, 3)) -> nn.Module:
    """mmseg's ``SwinTransformer`` backbone (our target naming)."""
    from mmseg.models.backbones import SwinTransformer
    return SwinTransformer(pretrain_img_size=arch.img_size, embed_dims=arch.embed_dims,
                           patch_size=arch.patch_size, window_size=window_size or arch.window_size,
                           mlp_ratio=arch.mlp_ratio, depths=arch.depths,
                           num_heads=arch.num_heads,
                           strides=(arch.patch_size, 2, 2, 2), out_indices=out_indices)


def build_mmpretrain(arch: SwinArch = SWIN_T, out_indices=(3,)) -> nn.Module:
    """mmpretrain's ``SwinTransformer`` (classifier default: ``out_indices=(3,)``)."""
    from mmpretrain.models import SwinTransformer
    return SwinTransformer(
        arch=dict(embed_dims=arch.embed_dims, depths=list(arch.depths),
                  num_heads=list(arch.num_heads)),
        img_size=arch.img_size, patch_size=arch.patch_size, window_size=arch.window_size,
        out_indices=out_indices)


def make_timm_state_dict(arch: SwinArch = SWIN_T, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Flat dict as in timm's hub files (``.pth`` or ``model.safetensors``)."""
    return dict(randomize_(build_timm(arch), seed).state_dict())


def make_mmpretrain_checkpoint(arch: SwinArch = SWIN_T, num_classes: int = 1000,
                               seed: int = 0, out_indices=(3,)) -> dict:
    """An mmpretrain ``ImageClassifier`` file: ``backbone.*`` + ``head.fc.*``."""
    backbone = randomize_(build_mmpretrain(arch, out_indices), seed)
    sd = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    gen = torch.Generator().manual_seed(seed + 1)
    sd['head.fc.weight'] = random_tensor('head.fc.weight', (num_classes, arch.dims(3)), gen)
    sd['head.fc.bias'] = random_tensor('head.fc.bias', (num_classes,), gen)
    return {'meta': {'mmpretrain_version': '1.2.0', 'dataset_meta': {}}, 'state_dict': sd}


def make_mmseg_checkpoint(arch: SwinArch = SWIN_T, num_classes: int = 150,
                          seed: int = 0) -> dict:
    """An mmseg UPerNet-style file: ``backbone.*`` plus some head tensors."""
    backbone = randomize_(build_mmseg(arch), seed)
    sd = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    gen = torch.Generator().manual_seed(seed + 1)
    channels = 512
    for name, shape in (('decode_head.conv_seg.weight', (num_classes, channels, 1, 1)),
                        ('decode_head.conv_seg.bias', (num_classes,)),
                        ('decode_head.psp_modules.0.1.conv.weight', (channels, arch.dims(3), 1, 1)),
                        ('decode_head.psp_modules.0.1.bn.weight', (channels,)),
                        ('decode_head.psp_modules.0.1.bn.bias', (channels,)),
                        ('auxiliary_head.conv_seg.weight', (num_classes, 256, 1, 1)),
                        ('auxiliary_head.conv_seg.bias', (num_classes,))):
        sd[name] = random_tensor(name, shape, gen)
    sd['decode_head.psp_modules.0.1.bn.running_mean'] = torch.zeros(channels)
    sd['decode_head.psp_modules.0.1.bn.running_var'] = torch.ones(channels)
    sd['decode_head.psp_modules.0.1.bn.num_batches_tracked'] = torch.tensor(160000)
    return {'meta': {'mmseg_version': '1.2.2', 'iter': 160000}, 'state_dict': sd}


def save_checkpoint(obj, path) -> str:
    """``torch.save`` or, for ``*.safetensors``, safetensors' ``save_file``."""
    path = str(path)
    if path.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in obj.items()}, path)
    else:
        torch.save(obj, path)
    return path
