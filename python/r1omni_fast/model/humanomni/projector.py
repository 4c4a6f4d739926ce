"""HumanOmni's visual projector ``all_in_one_small`` and the audio projector.

The RegStage here reproduces ``timm.models.regnet.RegStage`` with the arguments HumanOmni uses
(``act_layer=nn.SiLU, norm_layer=LayerNorm2d``; Bottleneck with ``bottle_ratio=1``,
``group_size=1`` (depthwise 3x3), ``se_ratio=0.25``, 1x1 conv shortcut when the width changes),
with timm's parameter names, so HumanOmni checkpoints load without renaming:
``b{i}.conv{1,2,3}.{conv,bn}.*``, ``b{i}.se.fc{1,2}.*``, ``b{i}.downsample.{conv,bn}.*``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LayerNormAct2d(nn.LayerNorm):
    """timm's LayerNormAct2d: LayerNorm over channels of an NCHW tensor, then an activation.

    ``y = act(LN(x.permute(0,2,3,1)).permute(0,3,1,2))``, eps 1e-5 (timm's default when
    ``norm_layer=LayerNorm2d`` is turned into its norm+act form).
    """

    def __init__(self, channels: int, apply_act: bool = True, eps: float = 1e-5) -> None:
        super().__init__(channels, eps=eps)
        self.act = nn.SiLU() if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return self.act(x.permute(0, 3, 1, 2))


class ConvNormAct(nn.Module):
    """timm's ConvNormAct: bias-free Conv2d ('same' padding for odd kernels) -> norm+act ``bn``."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, groups: int = 1, apply_act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, padding=(kernel_size - 1) // 2, groups=groups, bias=False)
        self.bn = LayerNormAct2d(out_chs, apply_act=apply_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SEModule(nn.Module):
    """Squeeze-excite: ``x * sigmoid(fc2(silu(fc1(mean_hw(x)))))`` with 1x1 convs."""

    def __init__(self, channels: int, rd_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


class Bottleneck(nn.Module):
    """RegNet bottleneck: ``silu(conv3(se(conv2(conv1(x)))) + shortcut(x))``."""

    def __init__(self, in_chs: int, out_chs: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_chs, out_chs, 1)
        self.conv2 = ConvNormAct(out_chs, out_chs, 3, groups=out_chs)
        self.se = SEModule(out_chs, int(round(in_chs * se_ratio)))
        self.conv3 = ConvNormAct(out_chs, out_chs, 1, apply_act=False)
        self.act3 = nn.SiLU()
        self.downsample = ConvNormAct(in_chs, out_chs, 1, apply_act=False) if in_chs != out_chs else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.se(self.conv2(self.conv1(x))))
        return self.act3(y + self.downsample(x))


class RegStage(nn.Module):
    """``depth`` bottlenecks named b1..b{depth}; the first maps in_chs -> out_chs."""

    def __init__(self, depth: int, in_chs: int, out_chs: int) -> None:
        super().__init__()
        for i in range(depth):
            self.add_module(f"b{i + 1}", Bottleneck(in_chs if i == 0 else out_chs, out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            x = block(x)
        return x


def mlp_2x_gelu(in_features: int, out_features: int) -> nn.Sequential:
    """``Linear(in, out) -> GELU -> Linear(out, out)`` (keys ``0.*`` and ``2.*``)."""
    return nn.Sequential(nn.Linear(in_features, out_features), nn.GELU(), nn.Linear(out_features, out_features))


class AllInOneSmallProjector(nn.Module):
    """HumanOmni's three-branch visual projector (``mm_projector_type: all_in_one_small``).

    Video and body branches (same structure, separate weights): per frame RegStage(768 -> H)
    -> Conv3d(H, H, k=(2,2,2), s=(1,2,2), pad=(1,0,0)) + SiLU over (t, h, w), dropping the last
    time step -> RegStage(H -> H) -> readout MLP; tokens ordered (t, h, w). Face branch: per-patch
    MLP (768 -> H -> H) then bilinear 2x down-sampling per frame. Output: three (B, k*(P/2)^2, H)
    tensors, fused outside with the BERT gate.
    """

    def __init__(self, mm_hidden_size: int, hidden_size: int, depth: int = 2) -> None:
        super().__init__()
        for branch in ("video", "body"):
            self.add_module(f"s1_{branch}", RegStage(depth, mm_hidden_size, hidden_size))
            self.add_module(
                f"sampler_{branch}",
                nn.Sequential(
                    nn.Conv3d(hidden_size, hidden_size, kernel_size=(2, 2, 2), stride=(1, 2, 2), padding=(1, 0, 0)),
                    nn.SiLU(),
                ),
            )
            self.add_module(f"s2_{branch}", RegStage(depth, hidden_size, hidden_size))
            self.add_module(f"readout_{branch}", mlp_2x_gelu(hidden_size, hidden_size))
        self.mlp_2xgelu_face = mlp_2x_gelu(mm_hidden_size, hidden_size)

    def _temporal_branch(self, name: str, x: torch.Tensor) -> torch.Tensor:
        b, t, n, c = x.shape
        side = math.isqrt(n)
        x = x.reshape(b * t, side, side, c).permute(0, 3, 1, 2)
        x = getattr(self, f"s1_{name}")(x)
        x = x.reshape(b, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)  # b, H, t, h, w
        x = getattr(self, f"sampler_{name}")(x)[:, :, :-1]
        new_t = x.shape[2]
        x = x.permute(0, 2, 1, 3, 4).reshape(b * new_t, *x.shape[1:2], *x.shape[3:])
        x = getattr(self, f"s2_{name}")(x)
        x = x.reshape(b, new_t, x.shape[1], -1).permute(0, 1, 3, 2).reshape(b, -1, x.shape[1])
        return getattr(self, f"readout_{name}")(x)

    def _face_branch(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, _ = x.shape
        side = math.isqrt(n)
        y = self.mlp_2xgelu_face(x.reshape(b * t, n, -1))
        y = y.reshape(b * t, side, side, -1).permute(0, 3, 1, 2)
        y = F.interpolate(y, size=(math.ceil(side / 2), math.ceil(side / 2)), mode="bilinear")
        return y.permute(0, 2, 3, 1).reshape(b, -1, y.shape[1])

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features: (B, k, P*P, C) SigLIP patch features -> (video, body, face), each (B, T, H)."""
        if features.dim() != 4 or math.isqrt(features.shape[2]) ** 2 != features.shape[2]:
            raise ValueError(f"projector input must be (B, frames, P*P, C), got {tuple(features.shape)}")
        return self._temporal_branch("video", features), self._temporal_branch("body", features), self._face_branch(features)
