"""Batch inference over photo collections: local worker processes (:func:`run_batch`) over the engine's
face rows (:mod:`faceage.engine`), which the Ray and Spark integrations share."""
from faceage.batch.run import BatchReport, run_batch
from faceage.engine import COLUMNS, SCHEMA, PredictOptions, predict_many

__all__ = ["COLUMNS", "SCHEMA", "BatchReport", "PredictOptions", "predict_many", "run_batch"]
