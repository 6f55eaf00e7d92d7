"""`curate sample`: a small, real, deterministic demo dataset with planted near-duplicates and its ground truth."""
