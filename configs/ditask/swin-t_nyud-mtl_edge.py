# DiTASK, Swin-T (ImageNet-22k), NYUD-v2 MTL with all four tasks: semseg (40
# classes), depth, normals and edges. swin-t_nyud-mtl.py plus normals and edges,
# each with the public code's task weight (one table for every dataset there:
# normals 10, edge 50 with BalancedBCE pos_weight 0.95, in the model base; see
# docs/configs.md), and edges scored with odsF/oisF/AP of the BSDS protocol at
# maxDist 0.011 (set in the dataset base; ditask_mm/evaluation/metrics/edge_ods.py).
# Δm: the dataset base has citable single-task baselines for semseg and depth only
# (DiTASK paper, Table 4), so normals and edge are reported but left out of Δm.
#
# Evaluation cost: about 15 s of one CPU core per 448² image for odsF on
# detector-like predictions (docs/benchmarks.md, "Edge metric (issue 17)"), about
# 3 core-hours for the 654 val images; each rank scores its share in
# edge_num_workers processes (8 ranks × 4 workers on free cores: about 5 minutes
# per validation).
_base_ = ['./swin-t_nyud-mtl.py']
tasks = ['semseg', 'depth', 'normals', 'edge']
val_evaluator = dict(edge_num_workers=4)
test_evaluator = val_evaluator
