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

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """The front end's output per frame: [B, T, features]."""
        y = self.front(x)  # [B, C, T, h, w]
        b, c, t, h, w = y.shape
        return y.permute(0, 2, 1, 3, 4).reshape(b, t, c * h * w)

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """The GRU's output per frame, after dropout: what the classifier
        reads ([B, T, 2 * hidden])."""
        y, _ = self.gru(self.drop(self.frame_features(x)))
        return self.drop(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.sequence(x))


class Intermediate(nn.Module):
    """Intermediate CTC (Lee & Watanabe, 2021) for `LipNet`'s 2-layer GRU:
    the same network run layer by layer, so that the first GRU layer's
    output also feeds a CTC head of its own (`head`, used in training only).

    The two one-layer GRUs here share `net.gru`'s parameters (nothing is
    copied: the network's state dict, its export and its moving average are
    unchanged), and dropout sits between them as `nn.GRU` puts it, so
    `forward` returns exactly the logits `net(x)` would, plus the
    intermediate ones."""

    def __init__(self, net: LipNet):
        super().__init__()
        g = net.gru
        self.net_ref = [net]  # not a submodule: its parameters stay the network's own
        self.dropout = g.dropout
        self.layers = []
        for layer in range(g.num_layers):
            one = nn.GRU(g.input_size if layer == 0 else 2 * g.hidden_size, g.hidden_size, 1, batch_first=True, bidirectional=True)
            for suffix in ("", "_reverse"):
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    setattr(one, f"{kind}_l0{suffix}", getattr(g, f"{kind}_l{layer}{suffix}"))
            self.layers.append(one)
        self.head = nn.Linear(2 * g.hidden_size, net.out.out_features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x as `LipNet` takes it; (final logits, intermediate logits), each [B, T, classes]."""
        net = self.net_ref[0]
        mid, _ = self.layers[0](net.drop(net.frame_features(x)))
        y = mid
        for layer in self.layers[1:]:
            y, _ = layer(nn.functional.dropout(y, self.dropout, net.training))
        return net.out(net.drop(y)), self.head(net.drop(mid))


class FrameWords(nn.Module):
    """A training-only head on `LipNet`'s GRU output that reads, on every
    frame, which word is spoken there (`words` classes and 0 for none): a
    dense, frame-level signal beside CTC's sequence-level one. The network is
    used as it is (its state dict, export and moving average unchanged);
    `forward` returns the logits `net(x)` would, plus the word logits."""

    def __init__(self, net: LipNet, words: int):
        super().__init__()
        self.net_ref = [net]  # not a submodule: its parameters stay the network's own
        self.head = nn.Linear(net.out.in_features, words + 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x as `LipNet` takes it; (logits [B, T, classes], word logits [B, T, words + 1])."""
        net = self.net_ref[0]
        y = net.sequence(x)
        return net.out(y), self.head(y)


def load_checkpoint(path, what: str = "checkpoint", device="cpu") -> dict:
    """A checkpoint `train`, `soup` or `slim` wrote, on `device`; a missing
    file or one of another kind stops with what it is and what to give
    (`what` names the flag it came from, e.g. "--init")."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"{what} {p}: no such file (a run's runs/NAME/best.pt or last.pt, or checkpoints/*.pt)")
    try:
        ckpt = torch.load(p, weights_only=False, map_location=device)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise SystemExit(f"{what} {p}: not a PyTorch checkpoint ({e})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "mean" not in ckpt:
        raise SystemExit(f"{what} {p}: not a checkpoint of this package's training (no weights and normalisation)")
    return ckpt


def lipnet_of(ckpt: dict, classes: int) -> LipNet:
    """The network a training checkpoint holds, at the width it was trained with
    (`train --channels --hidden`; checkpoints from before those flags are the
    default width)."""
    recipe = ckpt.get("recipe") or {}
    return LipNet(classes, channels=channels_of(recipe.get("channels")), hidden=int(recipe.get("hidden") or 256))


def channels_of(text: str | None) -> tuple[int, int, int]:
    """'16,32,64' -> (16, 32, 64): the three convolutions' channels."""
    if not text:
        return (16, 32, 64)
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"channels {text!r}: give three positive whole numbers, e.g. 16,32,64")
    return tuple(int(p) for p in parts)


class Served(nn.Module):
    """The exported contract: [B, 75, 46, 140, 1] float32 (already normalised as
    the metadata says) in, [B, 75, classes] probabilities out."""

    def __init__(self, net: LipNet):
        super().__init__()
        self.net = net

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 4, 1, 2, 3)  # [B, 1, T, H, W]
        return torch.softmax(self.net(x), dim=-1)


class FrameConv(nn.Module):
    """A Conv3d with temporal kernel 3 (padding 1) computed as a Conv2d over
    each frame and its two neighbours stacked as channels: exactly the same
    numbers, but in operators ONNX Runtime runs in int8 (it has no int8 3D
    convolution). Batch norm folded into the weights."""

    def __init__(self, conv: nn.Conv3d, bn: nn.BatchNorm3d):
        super().__init__()
        assert conv.kernel_size[0] == 3 and conv.padding[0] == 1 and conv.stride[0] == 1
        c_out, c_in, kt, kh, kw = conv.weight.shape
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        w = conv.weight * scale[:, None, None, None, None]
        b = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            b = b + conv.bias * scale
        # [out, in, kt, kh, kw] -> [out, kt * in, kh, kw]: channel k*in + c is
        # input channel c of frame t + k - 1.
        self.conv = nn.Conv2d(c_in * kt, c_out, (kh, kw), stride=conv.stride[1:], padding=conv.padding[1:])
        with torch.no_grad():
            self.conv.weight.copy_(w.permute(0, 2, 1, 3, 4).reshape(c_out, kt * c_in, kh, kw))
            self.conv.bias.copy_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, C, H, W] -> [B, T, C', H', W'] (ReLU and 2x2 max-pool applied)."""
        b, t, c, h, w = x.shape
        pad = torch.zeros_like(x[:, :1])
        xp = torch.cat([pad, x, pad], dim=1)
        stacked = torch.cat([xp[:, :-2], xp[:, 1:-1], xp[:, 2:]], dim=2)  # [B, T, 3C, H, W]
        y = self.conv(stacked.reshape(b * t, 3 * c, h, w))
        y = torch.nn.functional.max_pool2d(torch.relu(y), 2)
        return y.reshape(b, t, *y.shape[1:])


class Served2D(nn.Module):
    """The same contract and numbers as `Served`, with the front end written
    as per-frame 2D convolutions (`FrameConv`): the graph the INT8 variant is
    quantised from."""

    def __init__(self, net: LipNet):
        super().__init__()
        f = net.front
        self.blocks = nn.ModuleList([FrameConv(f[0], f[1]), FrameConv(f[4], f[5]), FrameConv(f[8], f[9])])
        self.gru, self.out = net.gru, net.out

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 1, 4, 2, 3)  # [B, T, 1, H, W]
        for block in self.blocks:
            x = block(x)
        b, t = x.shape[:2]
        y, _ = self.gru(x.reshape(b, t, -1))
        return torch.softmax(self.out(y), dim=-1)
