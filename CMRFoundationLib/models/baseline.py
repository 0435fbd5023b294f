"""ResNet50 baselines (from MONAI, trained from scratch): a classifier and a U-Net.

They take the same [B, 3, H, W] input as the ViT models and give the same outputs
(class logits, or segmentation logits / landmark heatmaps at the input resolution), so
training, evaluation and inference treat them like any other task model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.resnet import ResNet, get_inplanes

# The ResNet50 encoder halves the resolution five times.
_UNET_STRIDE = 32


class ResNet50Classifier(ResNet):
    """The standard 2D ResNet50 (bottleneck blocks [3, 4, 6, 3], 7x7 stride-2 stem,
    projection shortcuts) with a linear layer to ``n_classes`` logits."""

    def __init__(self, n_classes: int, in_channels: int = 3) -> None:
        # MONAI's defaults differ from the usual 2D ResNet50 (stem stride 1, biased
        # downsampling convolutions); set them as in the original architecture.
        super().__init__(
            block="bottleneck",
            layers=[3, 4, 6, 3],
            block_inplanes=get_inplanes(),
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            shortcut_type="B",
            bias_downsample=False,
            num_classes=n_classes,
        )
        self.n_classes = n_classes


class ResNet50UNet(FlexibleUNet):
    """A U-Net on a ResNet50 encoder (MONAI's FlexibleUNet, no pretrained weights).

    Any input size works: the image is zero-padded to a multiple of 32 (the encoder's
    total stride) and the output cropped back, so ``[B, 3, H, W] -> [B, out_channels, H, W]``.
    """

    def __init__(self, out_channels: int, in_channels: int = 3) -> None:
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            backbone="resnet50",
            pretrained=False,
            spatial_dims=2,
        )
        self.out_channels = out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.ndim != 4:
            raise ValueError(f"expected an image [B, C, H, W], got shape {tuple(inputs.shape)}")
        rows, cols = inputs.shape[-2:]
        pad_rows = -rows % _UNET_STRIDE
        pad_cols = -cols % _UNET_STRIDE
        if pad_rows or pad_cols:
            inputs = F.pad(inputs, (0, pad_cols, 0, pad_rows))
        return super().forward(inputs)[..., :rows, :cols]
