import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def synthetic_dataset(root: Path, n: int = 48, size: int = 48, seed: int = 0) -> Path:
    """Images whose brightness encodes the age, so a tiny model can learn something; returns the CSV."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        age = int(rng.integers(1, 90))
        img = np.full((size, size, 3), int(40 + 2 * age), np.uint8)
        img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
        name = f"img{i:03d}.png"
        Image.fromarray(img).save(root / name)
        rows.append((name, age, f"s{i // 2}"))
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "age", "subject"])
        w.writerows(rows)
    return root / "manifest.csv"


@pytest.fixture
def tiny_manifest(tmp_path) -> Path:
    return synthetic_dataset(tmp_path / "data")


def tiny_config(manifest: Path, cache: Path, **over):
    from faceage.train.config import load_config

    update: dict = {
        "data": {"manifest": str(manifest), "input_size": 32, "cache_dir": str(cache)},
        "optim": {"batch_size": 8, "epochs": 3, "warmup_epochs": 0},
        "run": {"threads": 1},
    }
    for key, value in over.items():
        section, name = key.split(".")
        update.setdefault(section, {})[name] = value
    return load_config("cpu", update)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    """An untrained 0.5x MA-SFV2 with the default crop record: for behaviour, not accuracy."""
    import torch

    from faceage.face.align import CropSpec
    from faceage.nets.model import create_model
    from faceage.nets.spec import ModelSpec
    from faceage.models.weights import ModelRecord
    from faceage.models.write import save_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "small.safetensors"
    record = ModelRecord(model=ModelSpec(), input_size=112, crop=CropSpec())
    return save_model(create_model("ma_sfv2", 0.5).eval(), record, path)


def fgnet_images(n: int = 3) -> list[Path]:
    folder = SHARED_DATA / "fgnet" / "images"
    if not folder.is_dir():
        pytest.skip("shared FG-NET data not available")
    return sorted(folder.iterdir())[:n]


@pytest.fixture(scope="module")
def batch_photos(tmp_path_factory) -> Path:
    """Photos with five faces, a face-less image and bad files (tests/batch_data.py)."""
    from batch_data import make_photo_folder

    return make_photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def batch_expected(batch_photos) -> dict:
    """``faceage predict -r batch_photos --json``: what every batch route must give."""
    from batch_data import predict_json

    return predict_json("-r", str(batch_photos))


TEST_PHOTOS = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def nan_model(tmp_path_factory) -> Path:
    """An ONNX 'age model' (default crop record, 112 px) whose outputs are finite on the grey load-time
    test crop and NaN on any real face: sqrt(-(x - 127)^2) is NaN wherever a pixel is not 127."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from faceage.face.align import CropSpec
    from faceage.nets.model import ModelSpec
    from faceage.models.weights import ModelRecord

    record = ModelRecord(model=ModelSpec(), input_size=112, crop=CropSpec())
    nodes = [helper.make_node("Cast", ["crops"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("Sub", ["x", "grey"], ["d"]),
             helper.make_node("Mul", ["d", "d"], ["sq"]),
             helper.make_node("Neg", ["sq"], ["neg"]),
             helper.make_node("Sqrt", ["neg"], ["root"]),
             helper.make_node("ReduceMean", ["root", "hw"], ["reg"], keepdims=0),
             helper.make_node("Unsqueeze", ["reg", "one"], ["col"]),
             helper.make_node("MatMul", ["col", "w"], ["logits"])]
    consts = [numpy_helper.from_array(np.array(127, np.float32), "grey"),
              numpy_helper.from_array(np.array([1, 2, 3], np.int64), "hw"),
              numpy_helper.from_array(np.array([1], np.int64), "one"),
              numpy_helper.from_array(np.linspace(0, 1, 101, dtype=np.float32)[None], "w")]
    graph = helper.make_graph(
        nodes, "nan-on-faces", [helper.make_tensor_value_info("crops", TensorProto.UINT8, ["batch", 112, 112, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 101]),
         helper.make_tensor_value_info("reg", TensorProto.FLOAT, ["batch"])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    helper.set_model_props(model, {"faceage": record.to_json()})
    path = tmp_path_factory.mktemp("nan-model") / "nan.onnx"
    onnx.save(model, str(path))
    return path
