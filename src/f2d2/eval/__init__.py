"""Evaluation: bits per dimension and dequantization, the NLL of a point file in batches, sample
metrics (sliced W2, support mass, per-point NLL error), FID through clean-fid and out-of-distribution
detection (AUROC, the complexity-corrected score)."""
