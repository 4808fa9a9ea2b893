"""`scene_errors`: the pairing must find each Gaussian's own twin, whatever the writer did."""

from __future__ import annotations

import pytest
import torch

from fields import GaussianScene
from fields.formats import scene_errors


def _scene(n: int, seed: int, degree: int = 1) -> GaussianScene:
    g = torch.Generator().manual_seed(seed)
    return GaussianScene(
        means=torch.rand(n, 3, generator=g),
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        scales=torch.rand(n, 3, generator=g) * 3 - 6,
        opacities=torch.randn(n, generator=g),
        sh=torch.randn(n, (degree + 1) ** 2, 3, generator=g) * 0.3,
    )


def test_kept_order_and_noise_is_measured_row_for_row():
    s = _scene(500, 0)
    noisy = s.replace(means=s.means + 1e-5, scales=s.scales + 0.01)
    err = scene_errors(s, noisy)
    assert err["matched"] == "index"
    assert err["means"] == pytest.approx(1e-5, rel=1e-2)
    assert err["log_scales"] == pytest.approx(0.01, rel=1e-3)


def test_a_few_moved_rows_are_found_again():
    """Mostly kept order, a few rows elsewhere (a Morton sort of already sorted data)."""
    s = _scene(2000, 1)
    order = torch.arange(2000)
    order[:10] = order[:10].flip(0)
    err = scene_errors(s, s.subset(order))
    assert err["matched"] == "nearest"
    assert max(err[k] for k in ("means", "log_scales", "rotation_deg", "opacity", "sh_rest")) == 0


def test_twins_sharing_position_and_colour_are_told_apart_by_rotation_and_sh():
    a = _scene(1000, 2)
    b = _scene(1000, 3)
    twin = b.replace(means=a.means, scales=a.scales, opacities=a.opacities)
    twin = twin.replace(sh=torch.cat([a.sh[:, :1], b.sh[:, 1:]], dim=1))  # same colour
    both = GaussianScene.concat([a, twin])
    shuffled = both.subset(torch.randperm(2000, generator=torch.Generator().manual_seed(4)))
    # coarse SH and rotation noise (a SOG-like writer) must not outvote the twin's difference
    g = torch.Generator().manual_seed(5)
    noisy = shuffled.replace(
        sh=shuffled.sh + torch.randn(shuffled.sh.shape, generator=g) * 0.02,
        quats=shuffled.quats + torch.randn(shuffled.quats.shape, generator=g) * 0.005,
    )
    err = scene_errors(both, noisy)
    assert err["matched"] == "nearest"
    assert err["means"] == 0 and err["rotation_deg"] < 3.0 and err["sh_rest"] < 0.15


def test_counts_must_agree():
    with pytest.raises(ValueError, match="nothing to compare"):
        scene_errors(_scene(10, 0), _scene(11, 0))
