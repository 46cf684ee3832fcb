# DiTASK on DINOv2 ViT-S/14 (mmpretrain's VisionTransformer, arch 'dinov2-s', with
# layer scale; AdaptedBackbone, docs/backbones.md), PASCAL-Context MTL: semseg,
# human parts, saliency, normals. A shared DiTASK transform on every qkv (split in
# q/k/v), proj, fc1 and fc2; norms train, all else (layer scales included) is
# frozen. 448² = 32 × 14: the 1/14 maps of blocks 3, 6, 9 and 12 become four
# scales through mmseg's MultiLevelNeck; one HRNet-style head per task (all heads
# read the same features: no task streams on a plain backbone).
#
# Weights (need a download, about 90 MB): mmpretrain's conversion of the official
# facebookresearch/dinov2 ViT-S/14 (dinov2_vits14_pretrain.pth), a whole-model
# checkpoint whose backbone keys start with 'backbone.'. Without internet, download
# it elsewhere and point to the file:
#   --cfg-options model.backbone.backbone.init_cfg.checkpoint=/path/to/vit-small-p14_dinov2-pre_3rdparty.pth
_base_ = ['../_base_/models/mtl_segmentor.py', '../_base_/datasets/pascal_mtl.py',
          '../_base_/schedules/schedule_300e.py', '../_base_/default_runtime.py']
dinov2_s = ('https://download.openmmlab.com/mmpretrain/v1.0/dinov2/'
            'vit-small-p14_dinov2-pre_3rdparty_20230426-5641ca5a.pth')
embed_dims = 384
model = dict(
    backbone=dict(
        type='AdaptedBackbone',
        backbone=dict(type='mmpretrain.VisionTransformer', arch='dinov2-s', img_size=448, patch_size=14,
                      layer_scale_init_value=1e-5, out_type='featmap', out_indices=(2, 5, 8, 11),
                      drop_path_rate=0.1,  # the 37×37 pretrained position embedding is resized to 32×32 on load
                      init_cfg=dict(type='Pretrained', checkpoint=dinov2_s, prefix='backbone.')),
        adapter=dict(type='DiTASKLinear', tessellation_size=64, theta_init='zeros', spectrum_mode='resample'),
        target_modules=[r'layers\.\d+\.attn\.(qkv|proj)', r'layers\.\d+\.ffn\.layers\.(0\.0|1)'],
        overrides=[dict(pattern=r'layers\.\d+\.attn\.qkv', num_splits=3)],
        trainable='adapters_norms'),
    neck=dict(type='mmseg.MultiLevelNeck', in_channels=[embed_dims] * 4, out_channels=embed_dims,
              scales=[4, 2, 1, 0.5]),
    # one head per task (the tasks: the dataset base's top-level `tasks`; heads and losses: mtl_segmentor.py)
    decode_head=dict(in_channels=[embed_dims] * 4))
