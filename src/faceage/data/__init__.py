"""Training data: importers -> manifest -> decoded cache -> augmented batches."""
