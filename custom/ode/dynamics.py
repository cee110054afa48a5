"""The latent vector field f(z) of the Neural ODE, with Gompertz dynamics on the volume coordinate.

With a declared volume coordinate j (standardised log-volume, see :mod:`custom.ode.gompertz`):

    d z_j / dt = alpha_b (z_K,b - z_j)                      (Gompertz in log-volume, Laird 1964)
    d z_-j / dt = MLP(z)                                     (other coordinates, conditioned on all of z)

with per-subject alpha_b > 0 and z_K,b set by :meth:`LatentDynamics.set_subject_params` before each solve
(they come from :class:`~custom.ode.subject_params.SubjectParamEncoder`). Without a volume coordinate the
whole field is the MLP (a plain latent Neural ODE, Chen et al. 2018).

The field is autonomous (no explicit t), so a trajectory may be integrated in time since its last
observation. The MLP uses smooth activations (SiLU) and a zero-initialised last layer, which starts from
"nothing changes" and keeps the learned field non-stiff (design §6).
"""

from __future__ import annotations

import torch
from torch import nn


def smooth_mlp(d_in: int, d_out: int, hidden: int, n_hidden_layers: int = 2) -> nn.Sequential:
    """SiLU MLP with a zero-initialised output layer (f = 0 at initialisation)."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(n_hidden_layers):
        layers += [nn.Linear(d, hidden), nn.SiLU()]
        d = hidden
    last = nn.Linear(d, d_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


class LatentDynamics(nn.Module):
    """f(t, z) for z [B, Z]; Gompertz on ``vol_index`` (if given) and a smooth MLP elsewhere.

    Example:
        >>> f = LatentDynamics(z_dim=4, vol_index=0)
        >>> f.set_subject_params(alpha=torch.tensor([0.5]), z_k=torch.tensor([1.0]))
        >>> f(torch.tensor(0.0), torch.zeros(1, 4))[0, 0]   # 0.5 * (1 - 0)
        tensor(0.5000, grad_fn=<SelectBackward0>)
    """

    def __init__(self, z_dim: int, vol_index: int | None = None, hidden: int = 64, n_hidden_layers: int = 2) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.vol_index = vol_index
        n_free = z_dim - 1 if vol_index is not None else z_dim
        self.mlp = smooth_mlp(z_dim, n_free, hidden, n_hidden_layers) if n_free > 0 else None
        self.alpha: torch.Tensor | None = None
        self.z_k: torch.Tensor | None = None
        self.nfe = 0

    def set_subject_params(self, alpha: torch.Tensor | None, z_k: torch.Tensor | None) -> None:
        """Per-subject Gompertz rate alpha [B] (1/time unit) and target level z_K [B] for the next solve."""
        self.alpha, self.z_k = alpha, z_k

    def subject_params(self) -> tuple[torch.Tensor, ...]:
        """The per-subject tensors currently set (for ``odeint_adjoint(adjoint_params=...)``)."""
        return tuple(p for p in (self.alpha, self.z_k) if p is not None)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        if self.vol_index is None:
            return self.mlp(z)
        if self.alpha is None or self.z_k is None:
            raise RuntimeError("set_subject_params(alpha, z_k) must be called before solving")
        j = self.vol_index
        dz_vol = (self.alpha * (self.z_k - z[:, j])).unsqueeze(1)
        if self.mlp is None:
            return dz_vol
        rest = self.mlp(z)
        return torch.cat([rest[:, :j], dz_vol, rest[:, j:]], dim=1)
