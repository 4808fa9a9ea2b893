"""Trainable Gaussians and their Adam state, with the surgery densification needs (append,
remove, overwrite rows) applied to parameters and optimizer moments together."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..scene import GaussianScene

NAMES = ("means", "quats", "scales", "opacities", "sh0", "shN")


class GaussianParams:
    """Leaf tensors means [N,3], quats [N,4], scales [N,3] (log), opacities [N] (logit),
    sh0 [N,1,3], shN [N,K-1,3] and one Adam over them (one param group each, own lr)."""

    def __init__(self, tensors: dict[str, Tensor], lrs: dict[str, float]) -> None:
        missing = set(NAMES) - set(tensors)
        if missing:
            raise ValueError(f"missing parameters {sorted(missing)}")
        self.tensors = {k: tensors[k].detach().clone().requires_grad_(True) for k in NAMES}
        self.optimizer = torch.optim.Adam(
            [{"params": [self.tensors[k]], "lr": lrs[k], "name": k} for k in NAMES],
            eps=1e-15,
            betas=(0.9, 0.999),
        )
        self.base_lr = dict(lrs)

    def __len__(self) -> int:
        return int(self.tensors["means"].shape[0])

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]

    @property
    def sh_degree(self) -> int:
        return round((self.tensors["shN"].shape[1] + 1) ** 0.5) - 1

    def scene(self, sh_degree: int | None = None) -> GaussianScene:
        """The current Gaussians as a scene that autograd reaches the parameters through."""
        t = self.tensors
        sh = torch.cat([t["sh0"], t["shN"]], dim=1)
        if sh_degree is not None:
            sh = sh[:, : (sh_degree + 1) ** 2]
        return GaussianScene(t["means"], t["quats"], t["scales"], t["opacities"], sh)

    def set_lr(self, name: str, lr: float) -> None:
        for g in self.optimizer.param_groups:
            if g["name"] == name:
                g["lr"] = lr

    def lr(self, name: str) -> float:
        return next(g["lr"] for g in self.optimizer.param_groups if g["name"] == name)

    # ------------------------------------------------------------------ surgery
    def update(
        self,
        param_fn: Callable[[str, Tensor], Tensor],
        state_fn: Callable[[str, Tensor], Tensor],
        names: tuple[str, ...] = NAMES,
    ) -> None:
        """Replace parameters by `param_fn(name, old)` and each Adam moment by
        `state_fn(name, old_moment)` (gsplat's `_update_param_with_optimizer`)."""
        for group in self.optimizer.param_groups:
            name = group["name"]
            if name not in names:
                continue
            old = group["params"][0]
            new = param_fn(name, old.detach()).detach().clone().requires_grad_(True)
            state = self.optimizer.state.pop(old, None)
            if state is not None:
                for key, v in state.items():
                    if key != "step" and isinstance(v, Tensor) and v.shape == old.shape:
                        state[key] = state_fn(name, v)
                self.optimizer.state[new] = state
            group["params"][0] = new
            self.tensors[name] = new

    def append(self, rows: dict[str, Tensor]) -> None:
        """Add Gaussians (each [M,...]) at the end with zero Adam moments."""
        self.update(
            lambda n, p: torch.cat([p, rows[n].to(p.dtype)]),
            lambda n, v: torch.cat([v, v.new_zeros((len(rows[n]), *v.shape[1:]))]),
        )

    def keep(self, mask: Tensor) -> None:
        """Keep the Gaussians where mask [N] bool is True."""
        self.update(lambda n, p: p[mask], lambda n, v: v[mask])

    def overwrite(self, index: Tensor, rows: dict[str, Tensor], names: tuple[str, ...] = NAMES):
        """Set the rows `index` [M] of the named parameters; their Adam moments restart at 0."""

        def param_fn(n: str, p: Tensor) -> Tensor:
            p = p.clone()
            p[index] = rows[n].to(p.dtype)
            return p

        def state_fn(n: str, v: Tensor) -> Tensor:
            v = v.clone()
            v[index] = 0
            return v

        self.update(param_fn, state_fn, names)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "tensors": {k: v.detach().clone() for k, v in self.tensors.items()},
            "optimizer": self.optimizer.state_dict(),
            "base_lr": dict(self.base_lr),
        }

    @classmethod
    def from_state_dict(cls, d: dict) -> GaussianParams:
        out = cls(d["tensors"], d["base_lr"])
        out.optimizer.load_state_dict(d["optimizer"])
        return out
