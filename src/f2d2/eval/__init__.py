"""Evaluation: bits per dimension and dequantization, the NLL of a point file in batches, sample
metrics (sliced W2, support mass, per-point NLL error) and FID through clean-fid."""
