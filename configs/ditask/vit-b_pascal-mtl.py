# DiTASK on mmseg's ViT-B/16 (AdaptedBackbone, docs/backbones.md), PASCAL-Context
# MTL: semseg, human parts, saliency, normals. A shared DiTASK transform on every
# attention (q/k/v split) and MLP linear; norms train, all else is frozen. The
# 1/16 maps of blocks 3, 6, 9 and 12 become 1/4…1/32 through mmseg's
# MultiLevelNeck; one HRNet-style head per task (all heads read the same features:
# no task streams on a plain backbone).
#
# Weights (need a download): mmseg's ViT reads timm checkpoints only after its key
# conversion, as mmseg's own ViT configs do. Once, with internet:
#   MMSEG=$(python -c 'import mmseg, os; print(os.path.dirname(mmseg.__file__))')
#   python $MMSEG/.mim/tools/model_converters/vit2mmseg.py \
#     https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth \
#     pretrain/jx_vit_base_p16_224-80ecf9dd.pth
# or point to another converted file:
#   --cfg-options model.backbone.backbone.init_cfg.checkpoint=/path/to/vit-b16_mmseg.pth
_base_ = ['../_base_/models/mtl_segmentor.py', '../_base_/datasets/pascal_mtl.py',
          '../_base_/schedules/schedule_300e.py', '../_base_/default_runtime.py']
vit_b16_in21k_in1k = 'pretrain/jx_vit_base_p16_224-80ecf9dd.pth'  # converted with vit2mmseg.py (above)
embed_dims = 768
model = dict(
    backbone=dict(
        type='AdaptedBackbone',
        backbone=dict(type='mmseg.VisionTransformer', img_size=(448, 448), patch_size=16, embed_dims=embed_dims,
                      num_layers=12, num_heads=12, mlp_ratio=4, out_indices=(2, 5, 8, 11), qkv_bias=True,
                      drop_path_rate=0.1, with_cls_token=True, final_norm=False, norm_cfg=dict(type='LN', eps=1e-6),
                      interpolate_mode='bicubic',  # the 14×14 pretrained position embedding is resized to 28×28
                      init_cfg=dict(type='Pretrained', checkpoint=vit_b16_in21k_in1k)),
        adapter=dict(type='DiTASKLinear', tessellation_size=64, theta_init='zeros', spectrum_mode='resample'),
        # nn.MultiheadAttention as a whole (its fused q/k/v projection split in 3, and out_proj); fc1, fc2
        target_modules=[r'layers\.\d+\.attn\.attn', r'layers\.\d+\.ffn\.layers\.(0\.0|1)'],
        overrides=[dict(pattern=r'layers\.\d+\.attn\.attn', type='DiTASKMultiheadAttention')],
        trainable='adapters_norms'),
    neck=dict(type='mmseg.MultiLevelNeck', in_channels=[embed_dims] * 4, out_channels=embed_dims,
              scales=[4, 2, 1, 0.5]),
    # one head per task (the tasks: the dataset base's top-level `tasks`; heads and losses: mtl_segmentor.py)
    decode_head=dict(in_channels=[embed_dims] * 4))
