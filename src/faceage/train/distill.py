"""Distillation: a teacher model's age distributions on the training crops become a student's soft targets.

The teacher (a bundled name, a model file or a run folder) scores every training crop once, with
the views its record was calibrated under, before the first epoch; the logits are kept in the run
folder, named by the teacher's digest and by the training rows they belong to, so a resumed run
reuses them and nothing else does. The crops are un-augmented (the student's own, or the teacher's
below): age does not change under the small flips, turns and colour changes of augmentation, so the
teacher's reading of the clean crop is the target of every augmented copy.

A teacher trained on other crops (dlib's 150-px chip for ``accurate``, faceage's 112-px crop for ``fast``)
scores its own crops of the same photos: ``distill.crops`` names manifests of them, matched to the
training rows by source photo, so each network sees the pixels it was trained on.

The targets are the teacher network's own outputs, without its prior correction (``logit_bias``).
They carry the age prior of the teacher's training draw (``data.mix``, ``data.age_balance``), and
the student's run puts back the prior of *its* draw at the end. So distil between runs drawn the
same way (``configs/fast-distilled.yaml`` draws as ``configs/accurate-face.yaml`` does); otherwise the
student's corrected ages keep part of the teacher's sampling prior.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from faceage.data.sets import crop_differences
from faceage.data.split import file_digest
from faceage.errors import ConfigError
from faceage.face.align import CropSpec

CHUNK = 512  # crops per progress step


def _teacher_backend(teacher: str, weights: Path, device: str):
    """The teacher on ``device``: on a GPU PyTorch; on a CPU ONNX Runtime, several times faster there for
    these networks, with the training's thread count (a bundled model's own ONNX file, else ``weights``
    exported to a temporary one)."""
    import tempfile

    import torch

    from faceage.models import locate
    from faceage.runtime import load_backend
    from faceage.runtime.onnx_backend import OnnxBackend

    if device.startswith("cuda"):
        return load_backend(weights, "torch" if weights.suffix == ".safetensors" else "auto", device=device)
    onnx = locate(teacher, backend="onnx")
    if onnx.suffix == ".onnx":
        return OnnxBackend(onnx, threads=torch.get_num_threads())
    from faceage.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:  # the session holds the whole model in memory; the file may go
        return OnnxBackend(export_onnx(weights, Path(tmp) / "teacher.onnx"), threads=torch.get_num_threads())


def rows_digest(samples) -> str:
    """A digest of the training rows in order (path and age): which faces a cached set of logits belongs to."""
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.path}\t{s.age}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _own_crops(path: Path, rec, train, crops: dict[str, str], cache_dir, quiet: bool) -> tuple[np.ndarray, str]:
    """The teacher's own crops of the training rows' photos, in row order, at its input size, and a digest of
    their contents. Every row needs one, and every manifest must be cropped as the teacher was."""
    from faceage.data.cache import build_cache
    from faceage.data.manifest import prepared_crop, read_manifest

    by_source = {}
    for name, manifest in crops.items():
        if diffs := crop_differences(rec.crop, prepared_crop(manifest), ("teacher", f"distill.crops.{name}")):
            raise ConfigError(f"distill.crops.{name} ({manifest}) is not cropped as the teacher {path} was "
                              f"trained: {diffs[0]}; prepare the photos with the teacher's crop")
        for s in read_manifest(manifest).samples:
            if s.source in by_source:
                raise ConfigError(f"distill.crops: the photo {s.source} has two teacher crops "
                                  f"({by_source[s.source].path} and {s.path}); keep one")
            if s.source:
                by_source[s.source] = s
    missing = [s for s in train.samples if s.source not in by_source]
    if missing:
        raise ConfigError(f"distill.crops has no crop of {len(missing)} of the {len(train.samples)} training photos "
                          f"(first: {missing[0].source or missing[0].path}); prepare them with the teacher's crop")
    mine = [by_source[s.source] for s in train.samples]
    cache = build_cache(mine, rec.input_size, cache_dir, quiet=quiet)
    if len(cache.index) < len(mine):
        raise ConfigError(f"distill.crops: {len(mine) - len(cache.index)} of the teacher's crops could not be "
                          f"read, first: {cache.problems[0]}")
    return np.asarray(cache.images), cache.key[:12]  # the crops' contents: crops prepared again are new targets


def teacher_logits(teacher: str, train, input_size: int, crop: CropSpec | None, out: Path,
                   device: str = "cpu", log: Callable[[str], None] = print, quiet: bool = False,
                   crops: dict[str, str] | None = None, cache_dir=None) -> tuple[np.ndarray, dict]:
    """(N, classes) float32 teacher logits for the training split ``train`` (a ``SplitData``: its (N, S, S, 3)
    uint8 ``images`` and ``samples``), and what to record about the teacher; computed once per teacher and
    set of rows, then read from ``out``. With ``crops`` (manifests of the teacher's own crops) the teacher
    scores those instead of the student's. On a GPU the teacher runs there (PyTorch); on a CPU on ONNX Runtime,
    the faster of the two there."""
    from faceage.models import locate
    from faceage.core.scoring import score
    from faceage.models.weights import read_record

    path = locate(teacher, backend="torch")  # the weights: their record and digest name the cached logits
    rec = read_record(path)  # a safetensors or an ONNX file given as the teacher
    digest = file_digest(path, "sha256")
    info = {"file": path.name, "sha256": digest, "tta": rec.scoring.tta}  # by name and content: records travel
    rows = rows_digest(train.samples)[:12]
    if crops:
        images, own = _own_crops(path, rec, train, crops, cache_dir, quiet)
        rows = f"{rows}-own{own}"
    else:
        images = train.images
        if rec.input_size != input_size:
            raise ConfigError(f"distill.teacher {path} reads {rec.input_size}-px crops, this run {input_size}-px "
                              f"(data.input_size); name the teacher's own crops in distill.crops")
        if crop is not None and (diffs := crop_differences(rec.crop, crop, ("teacher", "data"))):
            raise ConfigError(f"distill.teacher {path} was trained on other crops than this data's ({diffs[0]}); "
                              "name the teacher's own crops of these photos in distill.crops")
    cache = out / f"teacher-{digest[:16]}-{rec.scoring.tta}-rows{rows}.npy"
    if cache.is_file():
        logits = np.load(cache, allow_pickle=False)
        if logits.shape == (len(images), rec.num_classes) and np.isfinite(logits).all():
            return logits, info
    for old in sorted(set(out.glob("teacher-*.npy")) - {cache}):
        log(f"warning: {old.name} in {out} holds another teacher's logits or other training rows': the teacher "
            f"{path} or the data changed since they were made; the epochs from here learn from {cache.name}")
    backend = _teacher_backend(teacher, path, device)
    log(f"scoring {len(images)} training crops with the teacher {path} ({rec.scoring.tta} views, {backend.name})")
    parts = []
    with tqdm(total=len(images), desc="teacher", unit="face", disable=quiet, dynamic_ncols=True) as bar:
        for i in range(0, len(images), CHUNK):
            parts.append(score(backend, images[i : i + CHUNK], rec.scoring.tta).logits)
            bar.update(len(parts[-1]))
    logits = np.concatenate(parts) if parts else np.zeros((0, rec.num_classes), np.float32)
    if rec.logit_bias is not None:
        logits = logits - np.asarray(rec.logit_bias, np.float32)
    if not np.isfinite(logits).all():
        raise ConfigError(f"distill.teacher {path} gave NaN or infinite outputs on the training crops; it cannot "
                          "teach")
    logits = logits.astype(np.float32)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, logits, allow_pickle=False)
    tmp.replace(cache)
    return logits, info
