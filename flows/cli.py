"""The `cjflow` command line."""

from __future__ import annotations

import argparse
import csv
import importlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from flows.folder import DEFAULT_SCALE, InputError, first_error

if TYPE_CHECKING:
    from flows.embedded import StoredBatch
    from schemas import AssessmentResult, BatchSettings

# Modules adding subcommands: each has `add_commands(subparsers)`; every parser sets
# `handler=fn(args) -> int` with set_defaults. Handlers raise InputError for bad user input.
COMMAND_MODULES: tuple[str, ...] = ("flows.kafka_cli", "flows.db_cli")


def _assess_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("assess", help="rank (and grade) a folder of essays with the embedded flow")
    p.add_argument("folder", type=Path, help="folder of .txt/.md essays; essay id = file name stem")
    p.add_argument("--anchors", type=Path, help="CSV 'essay_id,grade' of essays with known grades")
    p.add_argument("--scale", default=DEFAULT_SCALE, help="grade scale of the anchors")
    p.add_argument("--assignment", type=Path, help="file with the task the students answered")
    p.add_argument("--judge", default="offline", help="offline | anthropic | openai | module:callable")
    p.add_argument("--model", help="provider model (default per provider)")
    from schemas import BatchSettings

    default_budget = BatchSettings.model_fields["budget"].default
    p.add_argument("--budget", type=int, default=None,
                   help=f"maximum valid comparisons (default {default_budget}, whatever the batch size; about 10"
                        " per essay, 5 x essays, measures a large batch well)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pairing", choices=["adaptive", "random"], default=None)
    p.add_argument("--in-flight", type=int, default=None, help="comparisons in flight")
    p.add_argument("--max-se", type=float, default=None, help="precision target: mean SE")
    p.add_argument("--out", type=Path, default=Path("cjflow-out"), help="output folder")
    p.add_argument("--db", help="database URL (default: SQLite in the output folder)")
    p.add_argument("--batch-id", help="batch id (default: derived from the folder's content)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port")
    p.add_argument("--no-png", action="store_true", help="do not write scale.png")
    p.set_defaults(handler=cmd_assess)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cjflow", description="Comparative Judgement of essays with LLM judges.")
    sub = parser.add_subparsers(dest="command", required=True)
    _assess_parser(sub)
    rep = sub.add_parser("report", help="print the ranking of a results.json and draw its scale")
    rep.add_argument("results", type=Path, help="results.json written by 'cjflow assess'")
    rep.add_argument("--png", type=Path, default=None, help="PNG to write (default: beside the results)")
    rep.add_argument("--bank", type=Path, default=None, metavar="CSV",
                     help="also write the anchors' scores as banked values (essay_id,grade,value,se) for "
                          "--anchors of later batches with the same judge; best from a calibration run")
    rep.set_defaults(handler=cmd_report)
    sch = sub.add_parser("schemas", help="JSON Schemas of the events")
    sch.add_argument("action", choices=["export", "check"])
    sch.add_argument("--dir", type=Path, default=None)
    sch.set_defaults(handler=cmd_schemas)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    args = parser.parse_args(argv)
    _tolerant_output()
    try:
        return int(args.handler(args))
    except InputError as exc:
        print(f"cjflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _tolerant_output() -> None:
    """Print what the locale's encoding cannot show escaped (an essay id, a judge message)
    instead of failing on it; on UTF-8 terminals nothing changes."""
    for stream in (sys.stdout, sys.stderr):
        if (getattr(stream, "encoding", "") or "").lower().replace("-", "") != "utf8" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (OSError, ValueError):  # a stream that cannot be reconfigured stays as it is
                pass


def cmd_schemas(args: argparse.Namespace) -> int:
    from schemas.export import JSON_DIR, export_schemas, render_schemas

    directory = args.dir or JSON_DIR
    if args.action == "export":
        for path in export_schemas(directory):
            print(path)
        return 0
    stale = [f for f, text in render_schemas().items() if not (directory / f).exists() or (directory / f).read_text() != text]
    if stale:
        print(f"cjflow: schemas out of date: {', '.join(stale)} (run 'cjflow schemas export')", file=sys.stderr)
        return 1
    return 0


#: BatchSettings fields set from `assess` options, for error messages
_OPTION_OF_SETTING = {
    "budget": "--budget", "in_flight": "--in-flight", "max_mean_se": "--max-se", "pairing": "--pairing",
    "seed": "--seed", "judge_provider": "--judge", "judge_model": "--model",
}


def prepare_batch(args: argparse.Namespace) -> tuple[str, list, BatchSettings]:
    """Folder + anchors + options -> (batch id, batch events, settings); InputError if bad."""
    from pydantic import ValidationError

    from cj.grading import GradingError
    from cj.scales import get_scale
    from flows.folder import MAX_BATCH_ID_CHARS, FolderBatch, batch_id_for, read_anchor_file, read_essays
    from schemas import BatchSettings

    if args.batch_id and len(args.batch_id) > MAX_BATCH_ID_CHARS:
        raise InputError(f"--batch-id may have at most {MAX_BATCH_ID_CHARS} characters, got {len(args.batch_id)}")
    essays = read_essays(args.folder)
    anchors: dict[str, str] = {}
    anchor_values: dict[str, tuple[float, float]] = {}
    scale_name = None
    if args.anchors:
        try:
            scale = get_scale(args.scale)
        except (GradingError, KeyError) as exc:
            raise InputError(f"unknown grade scale {args.scale!r}: {exc}") from None
        anchors, anchor_values = read_anchor_file(args.anchors, essays, scale)
        scale_name = scale.name
    assignment = ""
    if args.assignment:
        try:
            assignment = args.assignment.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read assignment {args.assignment}: {exc}") from None
        if "\x00" in assignment:
            raise InputError(f"assignment {args.assignment} contains a NUL character (\\x00), which the database"
                             " cannot store")
    if args.budget is not None and args.budget < 1:
        raise InputError("--budget must be at least 1")
    options = {
        "budget": args.budget,
        "in_flight": getattr(args, "in_flight", None),
        "max_mean_se": getattr(args, "max_se", None),
        "pairing": getattr(args, "pairing", None),
    }
    try:
        settings = BatchSettings(
            seed=args.seed, judge_provider=args.judge, judge_model=args.model,
            **{k: v for k, v in options.items() if v is not None},
        )
    except ValidationError as exc:
        raise InputError(f"invalid option {first_error(exc, _OPTION_OF_SETTING)}") from None
    batch_id = args.batch_id or batch_id_for(
        args.folder, essays, anchors, settings, anchor_values, scale=scale_name, assignment=assignment
    )
    try:
        events = FolderBatch(batch_id, essays, anchors, anchor_values).events(settings, scale_name, assignment)
    except ValidationError as exc:  # a limit of the event schema not checked above (e.g. assignment length)
        raise InputError(f"invalid batch: {first_error(exc)}") from None
    return batch_id, events, settings


def _stored_batch(db_url: str, batch_id: str) -> StoredBatch | None:
    """The batch as the database holds it (None if it holds none); InputError if the
    database cannot be used: unreachable, or a server database without cjflow's schema."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from flows.embedded import read_stored_batch, schema_problem
    from sinks.credentials import DatabaseConfigError
    from sinks.errors import classify
    from sinks.sql import make_engine

    try:
        url = make_url(db_url)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy raises ArgumentError and others
        raise InputError(f"invalid --db URL: {exc}") from None
    shown = url.render_as_string(hide_password=True)
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite and (not url.database or not Path(url.database).exists()):
        folder = Path(url.database).parent if url.database else None
        if folder is not None and not folder.is_dir():
            why = "is not a folder" if folder.exists() else "does not exist"
            raise InputError(f"cannot use database {shown}: cannot create {url.database}: folder {folder} {why}")
        return None  # a new SQLite file: the run creates it and its tables
    try:
        engine = make_engine(db_url)
    except (DatabaseConfigError, ValueError, SQLAlchemyError, ImportError) as exc:
        raise InputError(f"cannot use database {shown}: {exc}") from None
    try:
        problem = schema_problem(engine)
        if problem is not None and sqlite and problem.startswith("is at schema revision"):
            # the embedded database is cjflow's own: bring a file from an older cjflow up to date
            from alembic.util import CommandError

            from sinks.migrate import upgrade

            try:
                upgrade(db_url)
            except CommandError:  # a revision this cjflow does not know: written by a newer one
                raise InputError(f"database {shown} {problem}: it was written by a newer cjflow") from None
            problem = schema_problem(engine)
        if problem is not None:
            if sqlite:
                return None  # embedded SQLite: the run creates the tables
            raise InputError(
                f"database {shown} {problem}: run 'cjflow db upgrade' on it first (--url or $CJFLOW_DATABASE_URL)"
            )
        return read_stored_batch(engine, batch_id)
    except SQLAlchemyError as exc:
        c = classify(exc, engine.dialect.name)
        raise InputError(f"cannot use database {shown}: {c.kind}: {c.message.splitlines()[0]}") from None
    finally:
        engine.dispose()


def _replay(stored: StoredBatch, batch_id: str, events: list) -> AssessmentResult:
    """The stored result of this very batch, or InputError when it cannot be replayed."""
    from sinks.rows import event_rows

    anew = "to assess it anew pass a new --batch-id or another --db"
    ((_t, batch_row),) = event_rows(events[0])  # the rows this run would store
    essay_rows = {row["essay_id"]: row for ev in events[1:] for _t, row in event_rows(ev)}
    if not stored.same_inputs(batch_row, essay_rows):
        raise InputError(f"batch {batch_id} already exists in the database with other essays or settings; {anew}")
    if stored.result is None:
        why = stored.result_error or "it has no stored result"
        raise InputError(f"batch {batch_id} already exists in the database but {why}; {anew}")
    return stored.result


def cmd_assess(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from cj.stopping import StopRule, completion_target
    from flows.embedded import run_embedded
    from flows.output import ranking_table

    batch_id, events, settings = prepare_batch(args)
    _make_out_folder(args.out)  # before the database: the default one lives in it
    db_url = args.db or f"sqlite:///{(args.out / 'cjflow.sqlite3').resolve()}"
    stored = _stored_batch(db_url, batch_id)
    if stored is not None:
        # A replay: the database keeps the first run's rows (their ids follow from the batch
        # id), so the output files show that run too, and the judge is not called again.
        result = _replay(stored, batch_id, events)
        if result.status.value == "failed":  # the database keeps that result: a rerun cannot replace it
            why = f"; last judge error: {result.last_error}" if result.last_error else ""
            raise InputError(
                f"batch {batch_id} failed before ({result.stop_reason}{why}); to assess it again pass a new"
                " --batch-id or another --db"
            )
        written = _write_outputs(result, args)
        print(ranking_table(result))
        print(f"\nbatch {batch_id}: already assessed, replayed the stored result without judging"
              f" (for a new assessment pass a new --batch-id or another --db); wrote {', '.join(map(str, written))}")
        return 0 if result.status.value != "failed" else 1
    judge = judge_from_cli(args.judge, args.model)
    if args.metrics_port:
        serve_metrics(args.metrics_port, addr="127.0.0.1")
    if args.budget is None:
        _warn_default_budget(len(events) - 1, settings)
    target = completion_target(
        len(events) - 1,
        StopRule(budget=settings.budget, max_mean_se=settings.max_mean_se, min_ssr=settings.min_ssr,
                 min_per_essay=settings.min_per_essay, max_repeats=settings.max_repeats),
    )
    bar = _Progress(target, enabled=not args.no_progress and sys.stderr.isatty())
    started = time.perf_counter()
    try:
        collector = run_embedded(events, judge, db_url=db_url, on_judgement=bar.step)
    except SQLAlchemyError as exc:  # creating the embedded database's tables (errors in the flow come wrapped)
        raise InputError(f"cannot use database {_shown_url(db_url)}: {str(exc).splitlines()[0]}") from None
    except (KeyboardInterrupt, Exception) as exc:
        if not _caused_by_interrupt(exc):
            raise
        bar.close()
        print(f"cjflow: interrupted: {_after_interrupt(db_url, batch_id)}", file=sys.stderr)
        return 130
    bar.close()
    result = collector.results.get(batch_id)
    if result is None:
        reasons = "; ".join(d.reason for d in collector.dead_letters) or "no result"
        raise InputError(f"batch {batch_id} did not finish: {reasons}")
    elapsed = time.perf_counter() - started
    written = _write_outputs(result, args)
    print(ranking_table(result))
    print(f"\nbatch {batch_id}: {elapsed:.2f} s; wrote {', '.join(map(str, written))}, {db_url}")
    return 0 if result.status.value != "failed" else 1


def serve_metrics(port: int, addr: str = "0.0.0.0") -> None:
    """Prometheus `/metrics` on `port`; a port that is taken (both flows on one host with
    the default) or out of range is an InputError, not a traceback."""
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=addr)
    except (OSError, OverflowError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise InputError(f"cannot serve /metrics on port {port}: {why}; pass --metrics-port"
                         " (each process on a host needs its own)") from None


def _make_out_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the --out folder {out}: {exc.strerror or exc}") from None


def _shown_url(db_url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(db_url).render_as_string(hide_password=True)


def _warn_default_budget(n_essays: int, settings: BatchSettings) -> None:
    """Warn when the default budget cannot give every essay the comparisons the stopping
    rule wants first (min_per_essay each): such a batch ends 'completed' on a thin scale."""
    needed = -(-settings.min_per_essay * n_essays // 2)
    if settings.budget >= needed:
        return
    per_essay = 2 * settings.budget / n_essays
    print(
        f"cjflow: warning: the default --budget {settings.budget} allows about {per_essay:.1f} comparisons per essay"
        f" for {n_essays} essays (the stopping rule wants at least {settings.min_per_essay} each); pass"
        f" --budget {5 * n_essays} for about 10 per essay",
        file=sys.stderr,
    )


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether `exc` is, or was raised from, a KeyboardInterrupt: Bytewax's run_main turns
    Ctrl-C in the flow into a BytewaxRuntimeError from the KeyboardInterrupt."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        todo += [e.__cause__, e.__context__]
    return False


def _after_interrupt(db_url: str, batch_id: str) -> str:
    """What an interrupted run leaves, and what the same command does next (`cmd_assess`)."""
    anew = "to assess it again pass a new --batch-id or another --db"
    try:
        stored = _stored_batch(db_url, batch_id)
    except InputError:
        return f"batch {batch_id} has no stored result; if the same command is refused, {anew}"
    if stored is None:
        return f"batch {batch_id} has no stored result; the same command assesses it from the start"
    if stored.result is None:
        return (f"batch {batch_id} has no stored result; its rows so far stay in the database, so the same command"
                f" is refused: {anew}")
    if stored.result.status.value == "failed":
        return f"batch {batch_id} has a stored failed result, so the same command is refused: {anew}"
    return f"batch {batch_id} has a stored result; the same command replays it without judging"


def _write_outputs(result: AssessmentResult, args: argparse.Namespace) -> list[Path]:
    from flows.output import write_results

    try:
        written = [*write_results(result, args.out)]
        if not args.no_png and result.essays:
            from flows.report import plot_scale

            written.append(plot_scale(result, args.out / "scale.png"))
    except OSError as exc:
        raise InputError(f"cannot write the results to {args.out}: {exc.strerror or exc}"
                         f"{f' ({exc.filename})' if exc.filename else ''}") from None
    return written


def cmd_report(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from flows.output import ranking_table
    from flows.report import plot_scale
    from schemas import AssessmentResult

    try:
        result = AssessmentResult.model_validate_json(args.results.read_bytes())
    except FileNotFoundError:
        raise InputError(f"results file not found: {args.results}") from None
    except (OSError, ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"not a cjflow results file: {args.results}: {first}") from None
    print(ranking_table(result))
    png = plot_scale(result, args.png or args.results.with_name("scale.png"))
    print(f"\nwrote {png}")
    if args.bank:
        write_bank(result, args.bank)
        print(f"wrote {args.bank}")
    return 0


def write_bank(result: AssessmentResult, path: Path) -> None:
    """The anchors of a result as banked values: `essay_id,grade,value,se` (score and SE)."""
    anchors = [e for e in result.essays if e.is_anchor and e.anchor_grade]
    if not anchors:
        raise InputError(f"no anchors in {result.batch_id}: nothing to bank")
    try:
        with path.open("w", encoding="utf-8", newline="") as fh:  # csv quotes ids with commas or quotes
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["essay_id", "grade", "value", "se"])
            w.writerows([e.essay_id, e.anchor_grade, f"{e.score:.6f}", f"{e.se:.6f}"] for e in anchors)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc}") from None


def judge_from_cli(name: str, model: str | None):
    """The judge named on the command line; an unknown or unloadable one is an InputError
    (one line, exit 2), not a traceback. `cjflow submit` uses it to check before publishing."""
    from judges.plugin import PluginLoadError
    from judges.registry import build_judge

    try:
        return build_judge(name, model)
    except (PluginLoadError, ValueError) as exc:
        raise InputError(str(exc)) from None


class _Progress:
    """A one-line progress bar on stderr (judgements against the completion target)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = max(total, 1), 0, enabled

    def step(self, _judgement: object) -> None:
        self.done += 1
        if self.enabled:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\rjudging [{bar:<30}] {self.done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


if __name__ == "__main__":
    raise SystemExit(main())
