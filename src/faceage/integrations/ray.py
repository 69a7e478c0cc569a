"""Ray Data: age estimation as a ``Dataset.map_batches`` stage, one model per actor.

Example (a folder, or a Parquet file with a ``path`` column, to Parquet; docs/batch.md)::

    import ray
    from faceage.integrations.ray import predict_dataset

    ds = ray.data.read_binary_files("photos/", include_paths=True)       # columns bytes, path
    predict_dataset(ds, concurrency=8, column="bytes").write_parquet("ages/")

    paths = ray.data.read_parquet("paths.parquet")                        # column path
    predict_dataset(paths, concurrency=8).write_parquet("ages/")

Each actor is a process with one single-threaded model: ``concurrency`` actors use
``concurrency`` CPUs. Rows are those of ``faceage predict --output`` (:data:`faceage.engine.SCHEMA`).
"""
from __future__ import annotations

import numpy as np

from faceage.engine import COLUMNS, PredictOptions, estimator_for, predict_many

try:
    import ray.data
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(f"faceage.integrations.ray needs Ray Data ({exc}): pip install 'faceage[ray]'") from exc


class AgePredictor:
    """The callable class for ``map_batches``: loads the model once, then turns batches of images into face rows.

    ``column`` holds the images (paths or encoded bytes); ``path_column`` names them in
    the rows and error messages (the same column when ``column`` holds paths).
    """

    def __init__(self, column: str = "path", path_column: str = "path", **options) -> None:
        self.column, self.path_column = column, path_column
        self.options = PredictOptions(**options)
        estimator_for(self.options)  # loaded once per actor, before the first batch

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows = predict_many(self.options, batch[self.column], batch[self.path_column])
        return {c: [r[c] for r in rows] for c in COLUMNS}


def predict_dataset(ds: ray.data.Dataset, *, concurrency: int, column: str = "path", path_column: str = "path",
                    batch_size: int = 16, **options) -> ray.data.Dataset:
    """``ds`` mapped to face rows by ``concurrency`` one-CPU actors (``options``: :class:`PredictOptions` fields).

    Leave each node a CPU beyond its actors for the read and write tasks: actors
    holding every CPU leave those tasks waiting for ever.
    """
    return ds.map_batches(AgePredictor, fn_constructor_kwargs={"column": column, "path_column": path_column, **options},
                          compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=1, batch_size=batch_size)
