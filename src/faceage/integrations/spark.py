"""Spark: age estimation as an iterator pandas UDF (``DataFrame.mapInPandas``), one model per Python worker.

Example (docs/batch.md)::

    from pyspark.sql import SparkSession
    from faceage.integrations.spark import predict_dataframe

    spark = SparkSession.builder.getOrCreate()
    images = spark.read.format("binaryFile").option("pathGlobFilter", "*.jpg").load("photos/")
    predict_dataframe(images, column="content", path_column="path").write.parquet("ages/")

    paths = spark.read.parquet("paths.parquet")                           # column path
    predict_dataframe(paths.repartition(64)).write.parquet("ages/")

``mapInPandas`` rather than ``predict_batch_udf``: a photo gives any number of faces,
and one output row per face needs a UDF that may return more rows than it gets.
Spark runs one Python worker per task slot and reuses it, so each worker loads its
single-threaded model once (:func:`faceage.engine.estimator_for`).
"""
from __future__ import annotations

from typing import Iterator

from faceage.engine import COLUMNS, SCHEMA, PredictOptions, predict_many

try:
    import pandas as pd
    from pyspark.sql import DataFrame
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(f"faceage.integrations.spark needs PySpark ({exc}): pip install 'faceage[spark]'") from exc

#: The rows' Spark schema (DDL).
ROW_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in SCHEMA.items())


def predict_dataframe(df: DataFrame, *, column: str = "path", path_column: str | None = None,
                      **options) -> DataFrame:
    """Face rows for the images in ``column`` (paths or bytes) of ``df``, named by ``path_column``
    (default: ``column``); ``options``: :class:`PredictOptions` fields."""
    opts = PredictOptions(**options)
    names = path_column or column

    def rows(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield pd.DataFrame(predict_many(opts, batch[column], batch[names]), columns=list(COLUMNS))

    return df.select(*dict.fromkeys([column, names])).mapInPandas(rows, schema=ROW_SCHEMA)
