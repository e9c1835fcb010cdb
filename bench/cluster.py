"""Run the production flows as local processes against a Kafka broker: used by the
end-to-end tests, the kill test and `bench.pipeline --kafka`.

Only plain Kafka and the `cjflow` command line are used here; which broker runs is the
caller's business.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from flows.kafka_cli import publish
from flows.settings import Settings
from schemas import Topics

ROOT = Path(__file__).resolve().parents[1]
FLOWS = ("assessment", "judge")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Message:
    key: bytes | None
    value: bytes
    partition: int
    offset: int


@dataclass
class FlowCluster:
    """The assessment and judge flows, each as `processes` processes of `workers` workers."""

    bootstrap: str
    workdir: Path
    workers: int = 1
    processes: int = 1
    partitions: int = 4
    snapshot_s: float = 1.0
    db_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    procs: dict[str, list[subprocess.Popen]] = field(default_factory=dict)
    starts: int = 0

    @property
    def topics(self) -> Topics:
        return Topics(**{k: f"{self.prefix}.{v}" for k, v in Topics().model_dump().items()})

    @property
    def settings(self) -> Settings:
        return Settings(kafka_brokers=self.bootstrap, topics=self.topics)

    def env(self, flow: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BYTEWAX_", "CJFLOW_"))}
        env.update(
            CJFLOW_KAFKA_BROKERS=self.bootstrap,
            CJFLOW_METRICS_PORT="0",
            CJFLOW_RECOVERY_DIR=str(self.workdir / f"recovery-{flow}"),
            CJFLOW_SNAPSHOT_INTERVAL_S=str(self.snapshot_s),
            # the judge flow runs only listed plug-ins: the bench's stand-in judge is one
            CJFLOW_JUDGE_PLUGINS="bench.instant_judge:judge",
            PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
            **{f"CJFLOW_TOPICS__{k.upper()}": v for k, v in self.topics.model_dump().items()},
            **self.extra_env,
        )
        if self.db_url and flow == "assessment":
            env["CJFLOW_DATABASE_URL"] = self.db_url
        return env

    def _cli(self, *args: str, flow: str = "assessment") -> None:
        subprocess.run([sys.executable, "-m", "flows.cli", *args], env=self.env(flow), check=True,
                       capture_output=True, timeout=120)

    def setup(self) -> FlowCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._cli("topics", "create", "--partitions", str(self.partitions))
        for flow in FLOWS:
            self._cli("recovery", "init", "--partitions", str(max(2, self.workers * self.processes)), flow=flow)
        return self

    def start(self, flows: tuple[str, ...] = FLOWS) -> None:
        self.starts += 1
        for flow in flows:
            addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(self.processes))
            procs = []
            for pid in range(self.processes):
                cmd = [sys.executable, "-m", "flows.cli", "run", flow, "-w", str(self.workers)]
                if self.processes > 1:
                    cmd += ["-i", str(pid), "-a", addresses]
                log = open(self.workdir / f"{flow}-{pid}.log", "ab")
                procs.append(subprocess.Popen(cmd, env=self.env(flow), stdout=log, stderr=log, start_new_session=True))
            self.procs[flow] = procs

    def kill(self, flows: tuple[str, ...] = FLOWS) -> None:
        """SIGKILL: no graceful close, like a crash."""
        for flow in flows:
            for p in self.procs.pop(flow, []):
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=30)

    def alive(self) -> bool:
        return all(p.poll() is None for ps in self.procs.values() for p in ps)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.workdir.glob("*.log"))

    def publish(self, topic: str, events: list) -> None:
        publish(self.settings, topic, events)

    def read(self, topic: str, until: int, timeout: float, distinct: bool = True) -> list[Message]:
        """Every message of `topic` from the beginning, waiting until `until` distinct keys'
        worth (or messages, if not `distinct`) arrived or `timeout` passed."""
        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": f"{self.prefix}-reader", "enable.auto.commit": False}
        )
        meta = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(topic, timeout=10)
        parts = list(meta.topics[topic].partitions) if topic in meta.topics else list(range(self.partitions))
        consumer.assign([TopicPartition(topic, p, -2) for p in parts])
        out: list[Message] = []
        keys: set = set()
        end = time.time() + timeout
        try:
            while time.time() < end and (len(keys) if distinct else len(out)) < until:
                msg = consumer.poll(0.2)
                if msg is None or msg.error():
                    continue
                out.append(Message(msg.key(), msg.value(), msg.partition(), msg.offset()))
                keys.add(msg.key())
        finally:
            consumer.close()
        return out

    def stop(self) -> None:
        self.kill(tuple(self.procs))
