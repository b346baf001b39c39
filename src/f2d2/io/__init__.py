"""Files: checkpoints, atomic writes, point and image arrays, and the MeanFlow checkpoint importer."""
