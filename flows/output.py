"""Present a batch result: the ranking table, results.json and results.csv."""

from __future__ import annotations

import csv
from pathlib import Path

from schemas import AssessmentResult


def ranking_table(result: AssessmentResult) -> str:
    graded = any(e.projected_grade for e in result.essays)
    anchored = any(e.is_anchor for e in result.essays)
    head = ["rank", "essay", "score", "SE", *(["grade", "p(grade)"] if graded or anchored else []),
            "comparisons", "wins"]
    rows = []
    for e in sorted(result.essays, key=lambda e: e.rank):
        grade = []
        if graded or anchored:  # anchors stay marked when no grades could be projected
            label = e.projected_grade or ""
            if e.is_anchor:
                label = f"{label} (anchor {e.anchor_grade})".strip()
            p = (e.grade_probabilities or {}).get(e.projected_grade or "", None)
            grade = [label, f"{p:.2f}" if p is not None else ""]
        rows.append([str(e.rank), e.essay_id, f"{e.score:+.2f}", f"{e.se:.2f}", *grade, str(e.comparisons), str(e.wins)])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.rjust(w) if c[:1].isdigit() or c[:1] in "+-" else c.ljust(w) for c, w in zip(r, widths))
    lines = [fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)]
    summary = (
        f"status {result.status.value} ({result.stop_reason}); {result.comparisons_valid} valid comparisons"
        f" ({result.comparisons_errored} errored) of target {result.completion_target};"
        f" SSR {_fmt(result.reliability_ssr)}; position effect {_fmt(result.position_effect)};"
        f" cost ${result.cost_usd:.4f}"
    )
    notes = [
        f"{label}: {_one_line(text)}"
        for label, text in (
            ("no grades", result.grading_error),
            ("last judge error", result.last_error),
        )
        if text
    ]
    return "\n".join([*lines, "", summary, *notes])


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def write_results(result: AssessmentResult, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / "results.json", out_dir / "results.csv"
    # UTF-8 whatever the locale (essay ids and judge messages need not be ASCII)
    json_path.write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "essay_id", "score", "se", "infit", "outfit", "comparisons", "wins",
                    "anchor_grade", "projected_grade", "grade_probability"])
        for e in sorted(result.essays, key=lambda e: e.rank):
            p = (e.grade_probabilities or {}).get(e.projected_grade or "")
            w.writerow([e.rank, e.essay_id, e.score, e.se, e.infit, e.outfit, e.comparisons, e.wins,
                        e.anchor_grade or "", e.projected_grade or "", "" if p is None else p])
    return json_path, csv_path
