import pytest
import torch

from fields import GaussianScene


def make_scene(n=200, degree=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return GaussianScene(
        means=torch.rand(n, 3, generator=g) * 2 - 1,
        quats=torch.randn(n, 4, generator=g),
        scales=torch.log(torch.rand(n, 3, generator=g) * 0.05 + 0.01),
        opacities=torch.randn(n, generator=g) + 2,
        sh=torch.randn(n, (degree + 1) ** 2, 3, generator=g) * 0.3,
        extras={
            "label": torch.randint(0, 4, (n,), generator=g, dtype=torch.int32),
            "feature": torch.randn(n, 6, generator=g),
        },
    )


@pytest.fixture
def scene():
    return make_scene()
