"""`cjflow run | topics | submit | recovery`: the production (Kafka) side of the CLI."""

from __future__ import annotations

import argparse
import logging
from datetime import timedelta
from pathlib import Path

from flows.folder import DEFAULT_SCALE, InputError
from flows.settings import Settings, load_settings

log = logging.getLogger("cjflow")


def add_commands(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a production dataflow (Kafka) in this process")
    run.add_argument("flow", choices=["assessment", "judge"])
    run.add_argument("-w", "--workers", type=int, default=1, help="worker threads in this process")
    run.add_argument("-i", "--process-id", type=int, default=None, help="this process's id in the cluster")
    run.add_argument("-a", "--addresses", default=None, help="'host:port;host:port' of every process")
    run.add_argument("--config", type=Path, help="JSON config file (the environment overrides it)")
    run.add_argument("--metrics-port", type=int, default=None, help="serve /metrics here (default: settings)")
    run.set_defaults(handler=cmd_run)

    topics = sub.add_parser("topics", help="Kafka topics")
    topics.add_argument("action", choices=["create"])
    topics.add_argument("--partitions", type=int, default=None)
    topics.add_argument(
        "--replication-factor", type=int, default=-1,
        help="replicas per partition (default -1: the broker's default.replication.factor)",
    )
    topics.add_argument("--config", type=Path)
    topics.set_defaults(handler=cmd_topics)

    submit = sub.add_parser("submit", help="publish a folder of essays as a batch to Kafka")
    submit.add_argument("folder", type=Path)
    submit.add_argument("--anchors", type=Path)
    submit.add_argument("--scale", default=DEFAULT_SCALE)
    submit.add_argument("--assignment", type=Path)
    submit.add_argument("--judge", default="offline")
    submit.add_argument("--model")
    submit.add_argument("--budget", type=int)
    submit.add_argument("--seed", type=int, default=0)
    submit.add_argument("--batch-id")
    submit.add_argument("--config", type=Path)
    submit.set_defaults(handler=cmd_submit)

    rec = sub.add_parser("recovery", help="Bytewax recovery partitions")
    rec.add_argument("action", choices=["init"])
    rec.add_argument("--dir", type=Path, default=None, help="recovery directory (default: settings)")
    rec.add_argument("--partitions", type=int, default=None)
    rec.add_argument("--config", type=Path)
    rec.set_defaults(handler=cmd_recovery)


def cmd_run(args: argparse.Namespace) -> int:
    from bytewax._bytewax import cli_main
    from bytewax.recovery import RecoveryConfig

    from flows.cli import serve_metrics

    settings = load_settings(args.config)
    if args.flow == "assessment":
        from flows.assessment import build_flow
    else:
        from flows.judge import build_flow
    flow = build_flow(settings)
    port = args.metrics_port if args.metrics_port is not None else settings.metrics_port
    if port:
        serve_metrics(port + (args.process_id or 0) if args.metrics_port is None else port)
    recovery = None
    if settings.recovery_dir is not None:
        # Partitions may live with process 0 only (Bytewax fails itself if none exist at all).
        if (args.process_id or 0) == 0 and not any(settings.recovery_dir.glob("part-*.sqlite3")):
            raise InputError(f"no recovery partitions in {settings.recovery_dir}: run 'cjflow recovery init'")
        backup = timedelta(seconds=settings.backup_interval_s)
        recovery = RecoveryConfig(str(settings.recovery_dir), backup)
    kwargs: dict = dict(
        epoch_interval=timedelta(seconds=settings.snapshot_interval_s),
        recovery_config=recovery,
    )
    if args.addresses:
        kwargs.update(process_id=args.process_id or 0, addresses=args.addresses.split(";"))
    cli_main(flow, workers_per_process=args.workers, **kwargs)
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AdminClient, NewTopic

    settings = load_settings(args.config)
    admin = AdminClient({"bootstrap.servers": settings.kafka_brokers, **settings.kafka_add_config()})
    parts = args.partitions or settings.topic_partitions
    names = list(settings.topics.model_dump().values())
    from flows.kafka_io import MAX_MESSAGE_BYTES

    # Results of large batches exceed Kafka's default 1 MB message limit.
    config = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=parts, replication_factor=args.replication_factor, config=config) for n in names]
    )
    failed = 0
    for name, fut in futures.items():
        try:
            fut.result(timeout=30)
            rf = "broker default" if args.replication_factor == -1 else args.replication_factor
            print(f"created {name} ({parts} partitions, replication factor {rf})")
        except Exception as exc:  # noqa: BLE001 - report each topic
            if "TOPIC_ALREADY_EXISTS" in str(exc) or "already exists" in str(exc).lower():
                print(f"exists  {name}{_fewer_partitions(admin, name, parts)}")
            else:
                failed += 1
                print(f"failed  {name}: {exc}")
    return 1 if failed else 0


def publish(settings: Settings, topic: str, events: list) -> None:
    """Produce events keyed by batch id and wait until the broker has them all."""
    from confluent_kafka import Producer

    # The client's own log lines (a "Connection refused" every few ms while the broker is
    # away) are kept, not printed: the failure is reported once, with the last of them.
    said = _ClientLog()
    # this call's own logger, outside the global tree: concurrent calls keep their own lines
    client_log = logging.Logger("cjflow.submit.kafka")  # noqa: LOG001
    client_log.addHandler(said)
    producer = Producer({
        "bootstrap.servers": settings.kafka_brokers, "enable.idempotence": True,
        **settings.kafka_add_config(), "logger": client_log,
    })
    errors: list[str] = []

    def _cb(err, _msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None:
            errors.append(str(err))

    for ev in events:
        producer.produce(topic, key=ev.batch_id.encode(), value=ev.to_json(), on_delivery=_cb)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining or errors:
        why = f"; the client said: {said.last}" if said.last else ""
        raise InputError(f"could not publish {remaining or len(errors)} events to {topic}: {errors[:1]}{why}")


class _ClientLog(logging.Handler):
    """Keeps the Kafka client's last warning or error line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()[:300]


def cmd_submit(args: argparse.Namespace) -> int:
    from flows.cli import judge_from_cli, prepare_batch
    from judges.registry import BUILTIN

    # Check the judge before anything is published, as `assess` does. The built-in names
    # are known; their API keys live with the judge workers, not here, so they are not
    # built. Anything else (a `module:callable` plug-in) must build: known and importable.
    if args.judge not in BUILTIN:
        judge_from_cli(args.judge, args.model)
    settings = load_settings(args.config)
    batch_id, events, _settings = prepare_batch(args)
    publish(settings, settings.topics.requests, events)
    print(f"submitted batch {batch_id}: {len(events) - 1} essays to {settings.topics.requests}")
    return 0


def cmd_recovery(args: argparse.Namespace) -> int:
    from bytewax.recovery import init_db_dir

    settings = load_settings(args.config)
    directory = args.dir or settings.recovery_dir
    if directory is None:
        raise InputError("no recovery directory: pass --dir or set CJFLOW_RECOVERY_DIR")
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.glob("part-*.sqlite3")):
        print(f"recovery partitions already in {directory}")
        return 0
    init_db_dir(directory, args.partitions or settings.recovery_partitions)
    print(f"created {args.partitions or settings.recovery_partitions} recovery partitions in {directory}")
    return 0


def _fewer_partitions(admin: object, name: str, wanted: int) -> str:
    """A note when an existing topic has fewer partitions than asked (never grown here:
    growing one moves keys between partitions, which is the operator's call)."""
    try:
        have = len(admin.list_topics(topic=name, timeout=10).topics[name].partitions)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - only a note; the topic exists either way
        return ""
    if have >= wanted:
        return ""
    return (f" (warning: {have} partitions, fewer than the {wanted} asked; processes beyond {have} get no"
            " input of it: grow it with your Kafka tools)")
