import importlib.util
import json
from pathlib import Path

import jsonschema
import pytest

from flows.cli import main

ROOT = Path(__file__).resolve().parents[2]


def load_consumer():
    spec = importlib.util.spec_from_file_location("example_consumer", ROOT / "examples" / "consumer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_consumer_validates_real_results_and_dedupes(tmp_path, examples):
    out = tmp_path / "o"
    assert main(["assess", str(examples / "essays"), "--anchors", str(examples / "anchors.csv"), "--out", str(out),
                 "--no-progress", "--budget", "60"]) == 0
    raw = (out / "results.json").read_bytes()
    consumer = load_consumer()
    seen: set[str] = set()
    first = consumer.handle(raw, seen)
    assert first["batch_id"] and len(first["essays"]) == 24
    assert consumer.handle(raw, seen) is None  # a replayed duplicate is ignored
    broken = json.loads(raw)
    del broken["status"]
    with pytest.raises(jsonschema.ValidationError):
        consumer.handle(json.dumps(broken).encode(), set())
