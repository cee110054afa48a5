"""Networks: the 3D ResNet VAE, its decoders (transposed-conv, spatial broadcast) and single-tensor wrappers."""

from .blocks import BasicResBlock3D, ResizeConvBlock3D
from .decoder import ConvTransposeDecoder3D
from .encoder import ResNetEncoder3D
from .sbd import SpatialBroadcastDecoder3D, coordinate_grid
from .vae import VAE3D, ResNetVAE
from .wrappers import DecoderNet, EncoderNet, ReconstructionNet

__all__ = [
    "BasicResBlock3D",
    "ResizeConvBlock3D",
    "ConvTransposeDecoder3D",
    "ResNetEncoder3D",
    "SpatialBroadcastDecoder3D",
    "coordinate_grid",
    "VAE3D",
    "ResNetVAE",
    "ReconstructionNet",
    "EncoderNet",
    "DecoderNet",
]
