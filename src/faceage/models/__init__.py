"""The bundled models, chosen by name: ``AgeEstimator("fast")``, ``--model fast``, ``faceage models``.

Each ships as ``<stem>.onnx`` (ONNX Runtime: the default backend, no PyTorch needed) and
``<stem>.safetensors`` (PyTorch: fine-tuning, export), both carrying the same record
(preprocessing, calibration, age-check policies), so a name selects everything a model needs.
The headline numbers are the model card's, each set with the command that measures it.
Each file's sha256 is pinned in ``SHA256SUMS`` beside them and checked whenever it is loaded
(:mod:`faceage.models.digest`): an installed model that was altered is refused, not used.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from faceage.errors import WeightsError


@dataclass(frozen=True)
class BundledModel:
    name: str
    stem: str  # file name without extension, inside this package
    summary: str
    #: headline accuracy, what -> value (docs/model_card.md), and the command that measures it
    headline: dict[str, float] = field(default_factory=dict)
    measured_by: str = ""
    #: one face's network time on the project's 2-core machine (ONNX Runtime, one thread, batch 1, median ms),
    #: and the command that times it; ``faceage models --time`` times it on this machine
    ms_per_face: float | None = None
    timed_by: str = ""

    def file(self, backend: str = "auto") -> Path:
        """The ONNX file unless ``backend="torch"`` (then the safetensors one); the other if only it is there."""
        names = (".safetensors", ".onnx") if backend == "torch" else (".onnx", ".safetensors")
        base = resources.files(__name__)
        for ext in names:
            path = Path(str(base.joinpath(self.stem + ext)))
            if path.is_file():
                return path
        raise WeightsError(f"the bundled model {self.name!r} ({Path(str(base.joinpath(self.stem)))}.onnx or "
                           ".safetensors) is missing; reinstall faceage or pass model=FILE")


MODELS: dict[str, BundledModel] = {
    "fast": BundledModel(
        "fast", "fast",
        "MA-SFV2 0.5x at 112 px, trained on UTKFace + All-Age-Faces (model card: version 2)",
        {"UTKFace val MAE": 5.12, "AAF val MAE": 7.27, "FG-NET zero-shot MAE": 6.45},
        "python -m scripts.model_card_numbers --config configs/fast.yaml "
        "v2=src/faceage/models/fast.safetensors",
        0.75, "faceage models --time: the middle of three runs on the idle 2-core machine"),
    "accurate": BundledModel(
        "accurate", "accurate",
        "dlib's face-recognition ResNet (public domain, pretrained on about 3 million faces) fine-tuned for age "
        "on UTKFace + All-Age-Faces, at 150 px (model card: accurate)",
        {"UTKFace val MAE": 4.81, "AAF val MAE": 5.01, "FG-NET zero-shot MAE": 4.94},
        "python -m scripts.model_card_numbers --config configs/accurate-face.yaml --only-rows "
        "docs/model-card/fast-val-rows.txt fast=fast accurate=accurate",
        3.59, "faceage models --time: the middle of three runs on the idle 2-core machine"),
}
#: the model used when none is named
DEFAULT = "fast"



def list_models() -> list[str]:
    """The bundled models' names, the default first."""
    return sorted(MODELS, key=lambda n: (n != DEFAULT, n))


def locate(model: str | Path | None = None, backend: str = "auto") -> Path:
    """A model given by name (a bundled one), file or training run folder -> its file.

    An existing path wins over a name, so a folder called ``fast`` still means that folder."""
    from faceage.models.weights import resolve_model_path

    if model is None:
        return MODELS[DEFAULT].file(backend)
    if isinstance(model, str) and model in MODELS and not Path(model).exists():
        return MODELS[model].file(backend)
    if isinstance(model, str) and not Path(model).exists() and not any(c in model for c in "/\\."):
        near = difflib.get_close_matches(model, list(MODELS), n=1)
        hint = f"did you mean {near[0]}? " if near else ""
        raise WeightsError(f"{model!r} is neither a bundled model ({', '.join(list_models())}) nor a file or "
                           f"run folder; {hint}`faceage models` lists the bundled ones")
    return resolve_model_path(model)
