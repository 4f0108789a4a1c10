"""Quality scores, the judge, near-duplicates, difficulty, and the train/validation/test splits."""
