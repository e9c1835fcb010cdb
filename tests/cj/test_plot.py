from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cj.grading import fit_cut_points
from cj.plot import plot_scale
from cj.scales import get_scale


def test_plot_writes_png_with_anchors_and_no_cut_points(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = [f"essay-{i}" for i in range(20)]
    theta = rng.normal(0, 2, 20)
    se = np.full(20, 0.5)
    anchors = {"essay-0": "C", "essay-1": "A", "essay-2": "E"}
    out = plot_scale(names, theta, se, anchors, None, tmp_path / "scale.png", title="batch")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    assert [p.name for p in tmp_path.iterdir()] == ["scale.png"]


def test_plot_with_cuts_and_many_essays(tmp_path: Path) -> None:
    scale = get_scale("eng5_np_national_9_step")
    cuts = fit_cut_points(scale, np.array([-2.0, 0.0, 2.0]), ["2", "5", "8"])
    theta = np.linspace(-4, 4, 120)
    out = plot_scale([str(i) for i in range(120)], theta, np.full(120, 0.3), {"5": "2"}, cuts, tmp_path / "big.png")
    assert out.stat().st_size > 2000


def test_plot_rejects_mismatched_lengths(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        plot_scale(["a"], np.zeros(2), np.zeros(2), {}, None, tmp_path / "x.png")
