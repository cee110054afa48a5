# ---------------------------------------------------------------------------------------------------------
# PLAIN-PYTORCH REFERENCE, NOT PACKAGE CODE.
# The 3D ResNet VAE that the original design describes, kept unchanged as the throughput yardstick of
# `python -m custom bench` (H100, 128^3, batch 8: eager bf16 78 vol/s, compiled + channels_last + bf16
# 121 vol/s, 13.9 GiB peak). `custom/bench.py` loads it by file path and runs it beside the bundle networks.
# Do not edit, import from project code, or use it for training.
# ---------------------------------------------------------------------------------------------------------
import sys
import time

import torch
import torch.nn as nn


def gn(c):
    return nn.GroupNorm(8, c)


class Block(nn.Module):
    def __init__(s, cin, cout, stride):
        super().__init__()
        s.c1 = nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
        s.n1 = gn(cout)
        s.c2 = nn.Conv3d(cout, cout, 3, 1, 1, bias=False)
        s.n2 = gn(cout)
        s.sc = (
            None
            if (cin == cout and stride == 1)
            else nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), gn(cout))
        )
        s.r = nn.ReLU(inplace=True)

    def forward(s, x):
        y = s.r(s.n1(s.c1(x)))
        y = s.n2(s.c2(y))
        return s.r(y + (x if s.sc is None else s.sc(x)))


class VAE(nn.Module):
    def __init__(s, z=128, size=128):
        super().__init__()
        s.stem = nn.Sequential(nn.Conv3d(4, 32, 3, 2, 1, bias=False), gn(32), nn.ReLU(True))
        L = []
        cin = 32
        for w, st in [(32, 1), (64, 2), (128, 2), (256, 2)]:
            L += [Block(cin, w, st), Block(w, w, 1)]
            cin = w
        s.layers = nn.Sequential(*L)
        s.pool = nn.AdaptiveAvgPool3d(1)
        s.mu = nn.Linear(256, z)
        s.lv = nn.Linear(256, z)
        s.s0 = size // 32
        s.fc = nn.Linear(z, 256 * s.s0**3)
        ch = [256, 256, 128, 64, 32, 32]
        D = []
        for a, b in zip(ch[:-1], ch[1:]):
            D += [nn.ConvTranspose3d(a, b, 4, 2, 1), gn(b), nn.ReLU(True)]
        s.dec = nn.Sequential(*D)
        s.out = nn.Conv3d(32, 4, 3, 1, 1)

    def forward(s, x):
        h = s.pool(s.layers(s.stem(x))).flatten(1)
        mu, lv = s.mu(h), s.lv(h)
        z = mu + torch.randn_like(mu) * (0.5 * lv).exp()
        y = s.fc(z).view(-1, 256, s.s0, s.s0, s.s0)
        return s.out(s.dec(y)), mu, lv


if __name__ == "__main__":
    size = int(sys.argv[1])
    B = int(sys.argv[2])
    torch.set_num_threads(2)
    m = VAE(size=size)
    opt = torch.optim.Adam(m.parameters(), 1e-4)
    x = torch.randn(B, 4, size, size, size)
    print("params", sum(p.numel() for p in m.parameters()) / 1e6, "M")
    for i in range(3):
        t = time.time()
        xh, mu, lv = m(x)
        loss = ((xh - x) ** 2).mean() + (0.5 * (lv.exp() + mu**2 - 1 - lv)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(size, B, "step s", round(time.time() - t, 2))
