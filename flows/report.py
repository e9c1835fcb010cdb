"""A picture of a batch's scale: essays ordered by score with SE bars, anchors marked,
grade cut points drawn. People would rather look at this than read a table."""

from __future__ import annotations

from pathlib import Path

from schemas import AssessmentResult


def plot_scale(result: AssessmentResult, path: Path, title: str | None = None) -> Path:
    """Write a PNG of `result`'s scale to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    essays = sorted(result.essays, key=lambda e: e.score)
    n = len(essays)
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.28 * n + 1.2)), dpi=110)
    ys = range(n)
    plain = [(i, e) for i, e in enumerate(essays) if not e.is_anchor]
    anchors = [(i, e) for i, e in enumerate(essays) if e.is_anchor]
    ax.errorbar([e.score for _, e in plain], [i for i, _ in plain], xerr=[1.96 * e.se for _, e in plain],
                fmt="o", color="#1f77b4", ecolor="#9ec5e8", capsize=2, label="essay (95% interval)")
    if anchors:
        ax.errorbar([e.score for _, e in anchors], [i for i, _ in anchors], xerr=[1.96 * e.se for _, e in anchors],
                    fmt="D", color="#d62728", ecolor="#f4a3a3", capsize=2, label="anchor")
    labels = []
    for e in essays:
        grade = e.projected_grade or ""
        if e.is_anchor:
            grade = f"{e.anchor_grade}*"
        labels.append(f"{e.essay_id}  {grade}".rstrip())
    ax.set_yticks(list(ys), labels, fontsize=7)
    cuts = result.grade_cut_points or []
    scale_grades = list((essays[0].grade_probabilities or {}).keys()) if essays else []
    for k, c in enumerate(cuts):
        ax.axvline(c, color="#888888", lw=0.8, ls="--")
        if k + 1 < len(scale_grades):
            ax.text(c, n - 0.2, f" {scale_grades[k + 1]}", fontsize=7, color="#555555", va="bottom")
    ax.set_xlabel("score (logits); dashed lines: grade cut points" if cuts else "score (logits)")
    ssr = f", SSR {result.reliability_ssr:.2f}" if result.reliability_ssr is not None else ""
    ax.set_title(title or f"{result.batch_id}: {n} essays, {result.comparisons_valid} comparisons{ssr}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
