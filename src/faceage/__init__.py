"""faceage: age estimation from face photos with MA-SFV2 (ShuffleNetV2 + mixed attention)."""
__version__ = "0.1.0"
