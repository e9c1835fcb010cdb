"""A picture of the scale: essays by score with SE bars, anchors marked, grade cut points.

Uses matplotlib's Agg backend (no display) and writes only the file it is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cj.grading import CutPoints

__all__ = ["plot_scale"]


def plot_scale(
    names: Sequence[str],
    theta: np.ndarray,
    se: np.ndarray,
    anchors: Mapping[str, str],
    cut_points: CutPoints | None,
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """Write a PNG of essays ordered by score with 95% intervals, anchors and grade bands.

    Parameters
    ----------
    names : essay names (ids), one per essay.
    theta, se : scores and standard errors, one per essay.
    anchors : essay name -> known grade, for the anchors among `names`.
    cut_points : grade boundaries to draw (with grade labels), or None.
    path : the PNG to write (its directory must exist).
    title : optional figure title.

    Returns
    -------
    The path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in threads

    th = np.asarray(theta, dtype=float)
    s = np.asarray(se, dtype=float)
    if not (len(names) == th.shape[0] == s.shape[0]):
        raise ValueError("names, theta and se differ in length")
    order = np.argsort(th, kind="stable")
    n = th.shape[0]
    height = max(3.0, min(0.22 * n + 1.5, 40.0))
    fig = Figure(figsize=(8.0, height), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(n)
    is_anchor = np.array([names[i] in anchors for i in order], dtype=bool)
    xs, xe = th[order], 1.96 * s[order]
    ax.errorbar(xs[~is_anchor], y[~is_anchor], xerr=xe[~is_anchor], fmt="o", ms=4, color="#1f5fa8",
                ecolor="#9bb7d9", elinewidth=1.5, capsize=0, label="essay")
    if is_anchor.any():
        ax.errorbar(xs[is_anchor], y[is_anchor], xerr=xe[is_anchor], fmt="D", ms=6, color="#c0392b",
                    ecolor="#e6a39b", elinewidth=1.5, capsize=0, label="anchor")
        for yi, i in zip(y[is_anchor], order[is_anchor]):
            ax.annotate(anchors[names[i]], (th[i], yi), xytext=(6, 4), textcoords="offset points",
                        color="#c0392b", fontsize=8, fontweight="bold")
    labels = [str(names[i]) for i in order]
    if n <= 80:
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=7 if n > 30 else 9)
    else:
        ax.set_yticks([])
    lo = float(np.min(xs - xe)) if n else -1.0
    hi = float(np.max(xs + xe)) if n else 1.0
    if cut_points is not None:
        cuts = np.asarray(cut_points.cuts, dtype=float)
        cats = cut_points.scale.categories
        lo, hi = min(lo, float(cuts.min()) - 0.5), max(hi, float(cuts.max()) + 0.5)
        bounds = np.concatenate([[lo], cuts, [hi]])
        for k, cat in enumerate(cats):
            a, b = bounds[k], bounds[k + 1]
            if b <= a:
                continue
            ax.axvspan(a, b, color="#f2f2f2" if k % 2 == 0 else "#ffffff", zorder=0)
            ax.text((a + b) / 2, 1.005, cat, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=9, color="#444444")
        for c in cuts:
            ax.axvline(c, color="#888888", lw=0.8, ls="--", zorder=1)
    ax.set_xlim(lo, hi)
    ax.set_ylim(-1, n)
    ax.set_xlabel("score (logits) with 95% interval")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    return out
