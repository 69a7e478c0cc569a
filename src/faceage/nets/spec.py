"""The one declaration of the architectures (no torch here: model records are read without it).

``STAGE_CHANNELS`` per width and ``STAGE_REPEATS`` are ShuffleNetV2's Table 1 (Ma et al. 2018);
``ARCHS`` names the networks: the two built from them, and ``face_resnet``, dlib's face-recognition
ResNet (:mod:`faceage.nets.face_resnet`, one fixed shape: its width is 1.0). The model record (:mod:`faceage.models.weights`), the
training config (:mod:`faceage.train.config`) and the network (:mod:`faceage.nets.model`) all
take their allowed values from here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

NUM_AGES = 101  # ages 0..100
STAGE_REPEATS = (4, 8, 4)
STAGE_CHANNELS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
ARCHS = {"sfv2": False, "ma_sfv2": True, "face_resnet": False}  # name -> uses mixed attention
FIXED_ARCHS = ("face_resnet",)  # pretrained networks of one shape: no width multiplier
WIDTHS = tuple(sorted(STAGE_CHANNELS))
SE_REDUCTIONS = (1, 1024)  # the squeeze-excitation reduction's range
CLASS_COUNTS = (2, 1000)  # the number of age classes' range


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild the network; stored with its weights. Checked when made."""

    arch: str = "ma_sfv2"
    width: float = 0.5
    se_reduction: int = 4
    num_classes: int = NUM_AGES

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {sorted(ARCHS)}")
        if isinstance(self.width, bool) or not isinstance(self.width, (int, float)) or float(self.width) not in WIDTHS:
            raise ValueError(f"unknown width {self.width!r}; choose one of {list(WIDTHS)}")
        if self.arch in FIXED_ARCHS and float(self.width) != 1.0:
            raise ValueError(f"{self.arch} has one shape: its width is 1.0, not {self.width!r} (leave model.width unset)")
        for name, (lo, hi) in (("se_reduction", SE_REDUCTIONS), ("num_classes", CLASS_COUNTS)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name} must be a whole number in {lo}..{hi}, not {value!r}")
        object.__setattr__(self, "width", float(self.width))

    @classmethod
    def default_width(cls, arch: str) -> float:
        """The width when none is given: 1.0 for a network of one shape, else the dataclass default (0.5)."""
        return 1.0 if arch in FIXED_ARCHS else cls.width

    @property
    def name(self) -> str:
        return f"{self.arch}_{self.width:g}x"

    @property
    def attention(self) -> bool:
        return ARCHS[self.arch]

    @property
    def channels(self) -> tuple[int, ...]:
        return STAGE_CHANNELS[self.width]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        """A spec from its JSON form; unknown fields are refused (ValueError)."""
        unknown = sorted(set(data) - {"arch", "width", "se_reduction", "num_classes"})
        if unknown:
            raise ValueError(f"unknown fields {unknown}")
        missing = [k for k in ("arch", "width") if k not in data]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}")
        return cls(**data)
