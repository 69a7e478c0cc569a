"""Batch inference over photo collections: local worker processes (:func:`run_batch`), and the
face rows and per-process model that the Ray and Spark integrations share (:mod:`faceage.batch.rows`)."""
from faceage.batch.rows import COLUMNS, SCHEMA, PredictOptions, predict_many
from faceage.batch.run import BatchReport, run_batch

__all__ = ["COLUMNS", "SCHEMA", "BatchReport", "PredictOptions", "predict_many", "run_batch"]
