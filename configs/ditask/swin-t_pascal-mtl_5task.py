# DiTASK, Swin-T (ImageNet-22k), PASCAL-Context MTL with all five tasks: semseg,
# human parts, saliency, normals and edges. swin-t_pascal-mtl.py plus the edge
# task: the public code's weight 50 for edges (BalancedBCE, pos_weight 0.95; the
# weights and losses come from the model base), odsF/oisF/AP of the BSDS protocol
# at maxDist 0.0075 (ditask_mm/evaluation/metrics/edge_ods.py), edge in Δm as odsF
# against the single-task baseline of the dataset base. MTLoRA and DiTASK never
# trained or reported PASCAL edges; this is the 5-task setup of the MTI-Net/ATRC
# line of work on the DiTASK model.
#
# Evaluation cost: odsF matches 99 thresholded maps per image, about 11 s of one
# CPU core per 448² image on detector-like predictions (docs/benchmarks.md, "Edge
# metric (issue 17)"): about 16 core-hours for the 5,105 val images. Each rank
# scores its share in edge_num_workers processes, so 8 ranks × 4 workers (on free
# cores) take about half an hour per validation (every 5 epochs). To validate
# faster, score edges with the BCE proxy during training and odsF only in
# tools/test.py:
#   --cfg-options val_evaluator.edge_ods=False val_evaluator.baselines.edge=None
# (the best checkpoint is then picked by the Δm of the other four tasks).
_base_ = ['./swin-t_pascal-mtl.py']
tasks = ['semseg', 'human_parts', 'sal', 'normals', 'edge']
val_evaluator = dict(edge_num_workers=4)
test_evaluator = val_evaluator
