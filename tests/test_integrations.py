"""Ray Data (local mode) and Spark (local[2]) give ``faceage predict --json``'s answers, one row per face."""
import shutil

import pytest

from batch_data import as_json_records


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    # two actors plus one CPU for reading: actors holding every CPU would starve the read tasks
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow  # a Ray cluster start: ~30 s idle, minutes on a loaded machine
def test_ray_paths_and_bytes(ray_local, batch_photos, batch_expected):
    from faceage.integrations.ray import predict_dataset

    paths = ray_local.data.from_items([{"path": p} for p in batch_expected])
    assert as_json_records(predict_dataset(paths, concurrency=2, batch_size=3).take_all()) == batch_expected
    files = ray_local.data.read_binary_files(str(batch_photos), include_paths=True)
    rows = predict_dataset(files, concurrency=2, column="bytes").take_all()
    assert as_json_records(rows) == from_bytes(batch_expected)


def from_bytes(expected: dict) -> dict:
    """What changes when images come as bytes: an empty one is named as empty data, not an empty file."""
    empty = next(p for p in expected if p.endswith("empty.png"))
    from faceage.core.imageio import SUPPORTED_TEXT

    return {**expected, empty: {"path": empty, "error": f"{empty}: empty data (0 bytes); pass the bytes of a "
                                                        f"{SUPPORTED_TEXT} image"}}


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("faceage-test")
               .config("spark.ui.enabled", "false").getOrCreate())
    yield session
    session.stop()


@pytest.mark.slow  # a JVM and Spark start: ~40 s idle, minutes on a loaded machine
def test_spark_paths_and_bytes(spark, batch_photos, batch_expected):
    from faceage.integrations.spark import predict_dataframe

    paths = spark.createDataFrame([(p,) for p in batch_expected], "path string").repartition(2)
    rows = [r.asDict(recursive=True) for r in predict_dataframe(paths).collect()]
    assert as_json_records(rows) == batch_expected
    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(batch_photos))
    rows = [r.asDict(recursive=True) for r in predict_dataframe(files, column="content", path_column="path").collect()]
    for r in rows:
        r["path"] = r["path"].removeprefix("file:")
        r["error"] = r["error"] and r["error"].replace("file:", "")
    assert as_json_records(rows) == {p: e for p, e in batch_expected.items() if not p.endswith("empty.png")}
