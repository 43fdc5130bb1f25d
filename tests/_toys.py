"""The small taggers the attack tests train: one recipe, so that every test file does not
carry its own copy."""

from __future__ import annotations

import numpy as np
import torch


class _Standardised(torch.nn.Module):
    """``net((x - mu) / sd)``: a tagger that takes raw features."""

    def __init__(self, net: torch.nn.Module, mu: np.ndarray, sd: np.ndarray) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mu", torch.tensor(mu, dtype=torch.float32))
        self.register_buffer("sd", torch.tensor(sd, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mu) / self.sd)


def fit_mlp(
    X: np.ndarray, y: np.ndarray, hidden: int = 16, epochs: int = 150, standardise: bool = False
) -> torch.nn.Module:
    """A seeded one-hidden-layer MLP with one logit, trained full-batch with Adam (lr 1e-2);
    ``standardise``: trained on standardised features and wrapped to take raw ones."""
    mu, sd = X.mean(0), X.std(0)
    Z = (X - mu) / sd if standardise else X
    torch.manual_seed(0)
    d = X.shape[1]
    net = torch.nn.Sequential(
        torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
    )
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    Xt = torch.tensor(Z, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(Xt)[:, 0], yt).backward()
        opt.step()
    return (_Standardised(net, mu, sd) if standardise else net).eval()


#: the small attack the sharded and dask tests run
SHARDED_CFG = {
    "min_change": 0.01,
    "step": 0.02,
    "num_bins": 20,
    "n_iterations": 3,
    "max_jsd": 0.03,
    "max_dfn": 0.03,
    "block_size": 64,
    "progress": False,
}


def linear_toy(n: int = 500, d: int = 4, seed: int = 2) -> tuple[np.ndarray, torch.nn.Module]:
    """Correlated Gaussian features (feature 1 depends on 0: a correlation to protect) and a
    fixed logistic tagger, scripted (so it pickles to dask workers)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[:, 1] += 0.5 * X[:, 0]
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(d, 1), torch.nn.Sigmoid())
    with torch.no_grad():
        m[0].weight[:] = torch.tensor([[2.0, -1.0, 0.5, 0.3][:d]])
        m[0].bias.zero_()
    return X, torch.jit.script(m.eval())
