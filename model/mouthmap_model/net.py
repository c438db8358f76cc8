"""The reference model: LipNet family (3D convolutions, then a bidirectional GRU, CTC)."""

from __future__ import annotations

import torch
from torch import nn


class LipNet(nn.Module):
    """Input [B, 1, T, 46, 140] normalised grayscale; output [B, T, classes] logits.

    Three spatio-temporal convolution blocks (16/32/64 channels, each halving
    height and width, keeping every frame), then a 2-layer bidirectional GRU
    over time and a linear layer to the character classes.
    """

    def __init__(self, classes: int, channels=(16, 32, 64), hidden: int = 256, dropout: float = 0.3):
        super().__init__()
        c1, c2, c3 = channels
        self.front = nn.Sequential(
            nn.Conv3d(1, c1, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2), bias=False),
            nn.BatchNorm3d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(c1, c2, (3, 5, 5), padding=(1, 2, 2), bias=False),
            nn.BatchNorm3d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(c2, c3, (3, 3, 3), padding=(1, 1, 1), bias=False),
            nn.BatchNorm3d(c3),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 2, 2)),
        )
        # 46x140 -> 23x70 (stride) -> 11x35 -> 5x17 -> 2x8
        self.features = c3 * 2 * 8
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(self.features, hidden, num_layers=2, batch_first=True, bidirectional=True, dropout=dropout)
        self.out = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.front(x)  # [B, C, T, h, w]
        b, c, t, h, w = y.shape
        y = y.permute(0, 2, 1, 3, 4).reshape(b, t, c * h * w)
        y, _ = self.gru(self.drop(y))
        return self.out(self.drop(y))


class Served(nn.Module):
    """The exported contract: [B, 75, 46, 140, 1] float32 (already normalised as
    the metadata says) in, [B, 75, classes] probabilities out."""

    def __init__(self, net: LipNet):
        super().__init__()
        self.net = net

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 4, 1, 2, 3)  # [B, 1, T, H, W]
        return torch.softmax(self.net(x), dim=-1)
