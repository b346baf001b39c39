"""Files: checkpoints, atomic writes, point and image arrays, per-point tables, and the MeanFlow checkpoint importer."""
