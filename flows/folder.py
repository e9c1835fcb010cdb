"""Read a folder of essays and an anchors file into batch events, with one-line errors."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from cj.errors import GradingError
from cj.grading import validate_anchor_grades
from cj.scales import GradeScale
from schemas import BatchOpened, BatchSettings, EssaySubmitted
from schemas.envelope import Envelope
from schemas.events import MAX_BATCH_ESSAYS, MAX_ESSAY_CHARS

ESSAY_SUFFIXES = (".txt", ".md")


def _max_length(model: type, name: str) -> int:
    """A string field's max_length in the event schema (so the checks here follow it)."""
    for m in model.model_fields[name].metadata:
        if getattr(m, "max_length", None) is not None:
            return int(m.max_length)
    raise AssertionError(f"{model.__name__}.{name} has no max_length")


MAX_ESSAY_ID_CHARS = _max_length(EssaySubmitted, "essay_id")
MAX_BATCH_ID_CHARS = _max_length(Envelope, "batch_id")


class InputError(ValueError):
    """Bad user input; the message is shown as is, one line."""


def first_error(exc: ValidationError, options: dict[str, str] | None = None) -> str:
    """A pydantic error as one line for an InputError: 'where: what' (with `options`, the
    command-line option named for a field, and the value given)."""
    err = exc.errors()[0]
    loc = [str(x) for x in err.get("loc", ())]
    where = (options or {}).get(loc[0], ".".join(loc)) if loc else ""
    given = f" (got {err['input']!r})" if options and loc and loc[0] in options and "input" in err else ""
    return f"{where}: {err['msg']}{given}" if where else str(err["msg"])


@dataclass(frozen=True)
class FolderBatch:
    batch_id: str
    essays: dict[str, str]
    anchors: dict[str, str]
    anchor_values: dict[str, tuple[float, float]] = field(default_factory=dict)  # banked (value, se)

    def events(self, settings: BatchSettings, scale: str | None, assignment: str) -> list:
        opened = BatchOpened.create(
            self.batch_id, len(self.essays), grade_scale=scale, assignment=assignment, settings=settings
        )
        return [opened] + [
            EssaySubmitted.create(self.batch_id, eid, text, anchor_grade=self.anchors.get(eid), **self._banked(eid))
            for eid, text in self.essays.items()
        ]

    def _banked(self, eid: str) -> dict[str, float]:
        if eid not in self.anchor_values:
            return {}
        value, se = self.anchor_values[eid]
        return {"anchor_value": value, "anchor_value_se": se}


def read_essays(folder: Path) -> dict[str, str]:
    if not folder.exists():
        raise InputError(f"essay folder not found: {folder}")
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in ESSAY_SUFFIXES)
    if not files:
        raise InputError(f"no essays (.txt or .md files) in {folder}")
    essays: dict[str, str] = {}
    seen: dict[str, Path] = {}
    for path in files:
        eid = path.stem
        if len(eid) > MAX_ESSAY_ID_CHARS:
            raise InputError(
                f"essay file name too long: {path.name[:40]}... (the essay id, the name without"
                f" {path.suffix}, may have at most {MAX_ESSAY_ID_CHARS} characters, has {len(eid)})"
            )
        if eid in seen:
            raise InputError(f"duplicate essay id {eid!r}: {seen[eid].name} and {path.name}")
        seen[eid] = path
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read essay {path.name}: {exc.__class__.__name__}: {exc}") from None
        if not text.strip():
            raise InputError(f"empty essay: {path.name}")
        if len(text) > MAX_ESSAY_CHARS:
            raise InputError(f"essay {path.name} is longer than {MAX_ESSAY_CHARS} characters")
        if "\x00" in text or "\x00" in eid:
            raise InputError(f"essay {path.name} contains a NUL character (\\x00), which the database cannot store")
        essays[eid] = text
    if len(essays) < 2:
        raise InputError(f"need at least 2 essays to compare, found {len(essays)} in {folder}")
    if len(essays) > MAX_BATCH_ESSAYS:
        raise InputError(f"{len(essays)} essays in {folder}: a batch has at most {MAX_BATCH_ESSAYS}; split the folder")
    return essays


def read_anchors(path: Path, essays: dict[str, str], grades: tuple[str, ...] | GradeScale) -> dict[str, str]:
    """`essay_id,grade` CSV (header optional); every essay and grade must be known."""
    return read_anchor_file(path, essays, grades)[0]


def read_anchor_file(
    path: Path, essays: dict[str, str], grades: tuple[str, ...] | GradeScale
) -> tuple[dict[str, str], dict[str, tuple[float, float]]]:
    """`essay_id,grade[,value,se]` CSV (header optional) -> (grades, banked values).

    `grades` is the grade scale (or its grades, low -> high). The anchors must be able to
    place the scale: at least 2 anchors of at least 2 distinct grades. `value,se` is an
    anchor's ability on the logit scale of an earlier calibration with the same judge, and
    its SE; all anchors carry one or none do. A UTF-8 byte order mark (Excel) is skipped.
    """
    scale = grades if isinstance(grades, GradeScale) else GradeScale("anchors", tuple(grades))
    grades = scale.grades
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise InputError(f"anchors file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read anchors file {path}: {exc}") from None
    anchors: dict[str, str] = {}
    values: dict[str, tuple[float, float]] = {}
    for lineno, row in enumerate(csv.reader(lines), start=1):
        while row and not row[-1].strip():  # trailing empty cells (Excel writes 'essay_id,grade,')
            row = row[:-1]
        if not row or row[0].lstrip().startswith("#"):
            continue
        header = [c.strip().lower() for c in row]
        if lineno == 1 and header[:2] == ["essay_id", "grade"]:
            if header[2:] in ([], ["value", "se"]):
                continue
            others = [c.strip() for c in row[2:]]
            unexpected = [c for c in others if c.lower() not in ("value", "se")] or others
            raise InputError(
                f"{path.name} line 1: unexpected header column(s) {', '.join(map(repr, unexpected))};"
                " the accepted header is essay_id,grade[,value,se]"
            )
        if len(row) < 2:
            raise InputError(f"{path.name} line {lineno}: expected 'essay_id,grade' or 'essay_id,grade,value,se'")
        eid, grade = row[0].strip(), row[1].strip()
        if eid not in essays:
            raise InputError(f"{path.name} line {lineno}: anchor names unknown essay {eid!r}")
        if grade not in grades:
            raise InputError(
                f"{path.name} line {lineno}: unknown grade {grade!r} for {eid} (scale grades: {', '.join(grades)})"
            )
        if eid in anchors:
            raise InputError(f"{path.name} line {lineno}: essay {eid!r} anchored twice")
        anchors[eid] = grade
        extra = [c.strip() for c in row[2:]]
        if any(extra):
            values[eid] = _banked_value(path, lineno, extra)
    if not anchors:
        raise InputError(f"anchors file {path} names no anchors")
    try:  # the rules that place a scale live with the grading (cj.grading)
        validate_anchor_grades(scale, list(anchors.values()), require_enough=True)
    except GradingError as exc:
        raise InputError(f"{path.name}: {exc}") from None
    if values and len(values) != len(anchors):
        missing = sorted(set(anchors) - set(values))
        raise InputError(
            f"{path.name}: some anchors have banked values and some not (none for {', '.join(missing)}); give all or none"
        )
    return anchors, values


def _banked_value(path: Path, lineno: int, extra: list[str]) -> tuple[float, float]:
    if len(extra) != 2 or not all(extra):
        raise InputError(f"{path.name} line {lineno}: a banked value needs both 'value,se'")
    try:
        value, se = float(extra[0]), float(extra[1])
    except ValueError:
        raise InputError(f"{path.name} line {lineno}: value and se must be numbers, got {extra[0]!r}, {extra[1]!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{path.name} line {lineno}: value must be finite, got {extra[0]!r}")
    if not (math.isfinite(se) and se > 0):
        raise InputError(f"{path.name} line {lineno}: se must be a finite number > 0, got {extra[1]!r}")
    return value, se


DEFAULT_SCALE = "swedish_8_anchor"  # the CLI's --scale default


def batch_id_for(
    folder: Path, essays: dict[str, str], anchors: dict[str, str], settings: BatchSettings,
    anchor_values: dict[str, tuple[float, float]] | None = None,
    *, scale: str | None = None, assignment: str = "",
) -> str:
    """Same folder, anchors (grades and banked values), grade scale, assignment and
    settings -> same batch id, so a rerun is a replay; any of them different -> new id.

    These are everything in the batch's events (`FolderBatch.events`), so everything the
    result depends on but the judge itself."""
    h = hashlib.sha256()
    payload: list[object] = [sorted(essays.items()), sorted(anchors.items()), settings.model_dump()]
    # the rest only when given (the scale when not the default one), so ids of batches
    # without them stay as they were before they were hashed
    if anchor_values:
        payload.append(sorted(anchor_values.items()))
    if scale == DEFAULT_SCALE:
        scale = None
    extra = {k: v for k, v in (("scale", scale), ("assignment", assignment)) if v}
    if extra:
        payload.append(extra)
    h.update(json.dumps(payload).encode())
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in folder.resolve().name)[:60] or "batch"
    return f"{name}-{h.hexdigest()[:12]}"
