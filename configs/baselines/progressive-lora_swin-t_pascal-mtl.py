# Progressive task-specific multi-task adaptation (Gangwar et al., arXiv
# 2509.19602, AISTATS 2026), the LoRA-based method, Swin-T, PASCAL-Context MTL.
# What the paper states, and this config follows: LoRA adapters on a frozen
# Swin; adapters shared by all tasks in the early layers and increasingly
# task-specific toward the heads, as a branched ('tree') network whose branches
# each hold their own adapters; tasks grouped by the expected cosine similarity
# of their gradients on the shared parameters (tools/analysis_tools/task_affinity.py);
# about a fifth of full fine-tuning's trainable parameters.
# What it does not state in the text available to us, and is chosen here:
#   * the groups and branch points: those of swin-t_pascal-mtl_progressive-tree.py
#     (stages 1-2 shared, two groups from stage 3's last block, one task per
#     stream from stage 4's last block);
#   * rank 16 for every LoRA, shared and per group (5,340,218 trainable
#     parameters, heads included: 1/5.5 of full fine-tuning's 29,464,442;
#     rank 32 would give 7,134,266, 1/4.1), MTLoRA's scale 4 and dropout 0.05;
#   * the rest trains as in the other baselines (trainable='public').
# Differences from a fully branched network: qkv keeps its shared adaptation in
# every stream (only proj/fc1/fc2 are per group), as in DiTASK and MTLoRA here.
_base_ = ['../ditask/swin-t_pascal-mtl_progressive-tree.py']
model = dict(backbone=dict(
    type='MultiTaskSwinTransformer',
    adapter=dict(_delete_=True, type='LoRALinear', rank=16, scale=4.0, dropout=0.05)))
