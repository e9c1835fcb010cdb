"""A fake LLM provider on loopback that speaks enough of the Anthropic and OpenAI HTTP APIs
for their official SDKs: messages (tool use), message batches, chat completions (JSON schema
output), files and batches; with rate-limit headers, enforced requests/min and tokens/min
(429 + Retry-After), latency, and injected faults.

    python -m bench.fake_provider --port 8765 --rpm 600 --tpm 100000 --latency-ms 200-500

The verdict follows a hidden quality marker in the essays: `[q=7]` beats `[q=3]` (ties and
missing markers: the longer essay wins). Markers in an essay inject faults for that
comparison: `[fault=KIND]` always, `[fault=KIND:N]` for its first N attempts only, where
KIND is 429, 529, 500, 400, 401, 404, timeout, malformed, max_tokens, refusal,
item_malformed (bundles: only that item's answer is bad) or echo_key (a 400 whose message
echoes the API key the request presented, as some proxies do; in a provider batch, every
later call about that batch: status, results, cancel). `--fault-rate` adds random
429/529/500 faults to any request.

It is an asyncio server (HTTP/1.1 keep-alive, no dependencies) so a thousand slow requests
can be open at once. `GET /_stats` returns counters; `FakeProvider` runs it in a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Self
from urllib.parse import urlsplit

QUALITY = re.compile(r"\[q=(-?\d+(?:\.\d+)?)\]")
FAULT = re.compile(r"\[fault=([a-z_0-9]+)(?::(\d+))?\]")
# The prompt's essay delimiters (see judges/prompt.py): <<<ESSAY_A:nonce>>> ... <<<END_ESSAY_A:nonce>>>
ESSAY = re.compile(r"<<<ESSAY_([AB])(?:_(\w+))?:(\w+)>>>\n(.*?)\n<<<END_ESSAY_\1(?:_\2)?:\3>>>", re.DOTALL)
ITEM = re.compile(r"<<<COMPARISON (\S+)>>>")
INJECTABLE = ("429", "529", "500")


@dataclass
class FakeConfig:
    rpm: float | None = None  # enforced requests per minute (None: unlimited)
    tpm: float | None = None  # enforced tokens per minute
    burst_s: float = 5.0  # bucket capacity in seconds of the rate
    latency_ms: tuple[float, float] = (0.0, 0.0)  # uniform range per request
    fault_rate: float = 0.0  # random 429/529/500 per request
    fault_kinds: tuple[str, ...] = INJECTABLE
    hang_s: float = 30.0  # how long a "timeout" fault holds the request
    api_key: str | None = None  # when set, other keys get 401
    batch_delay_s: float = 0.3  # a provider batch ends this long after creation
    seed: int = 0


@dataclass
class FakeStats:
    requests: int = 0
    ok: int = 0
    rate_limited_requests: int = 0  # 429 because the requests/min bucket was empty
    rate_limited_tokens: int = 0  # 429 because the tokens/min bucket was empty
    injected: dict[str, int] = field(default_factory=dict)
    tokens_admitted: int = 0
    max_tokens_60s: int = 0  # most tokens admitted in any trailing 60 s window
    max_requests_60s: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    batches: int = 0
    batches_cancelled: int = 0  # cancel requests for a known batch (ids in FakeProvider.cancelled)


class _Bucket:
    """Token bucket: `rate_per_min`, capacity `burst_s` seconds of it; starts full."""

    def __init__(self, rate_per_min: float, burst_s: float):
        self.rate = rate_per_min / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.level = self.capacity
        self.limit = rate_per_min
        self.at = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait_for(self, amount: float) -> float:
        self.refill()
        need = min(amount, self.capacity) - self.level
        return 0.0 if need <= 0 else need / self.rate


def tokens_of(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


class FakeProvider:
    """The server. `start()` runs it on a background thread; `url` is its base URL."""

    def __init__(self, config: FakeConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.config = config or FakeConfig()
        self.stats = FakeStats()
        self.host, self.port = host, port
        self._rng = random.Random(self.config.seed)
        self._seen: dict[str, int] = {}  # attempts per (fault marker, comparison) for `:N` faults
        self._cache: set[str] = set()  # system prompts seen (prompt caching)
        self._window: deque[tuple[float, int]] = deque()
        self._window_tokens = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=50)  # last inference bodies, for tests
        self._files: dict[str, bytes] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []  # batch ids a cancel was asked for, in order
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self.reset_limits()

    # ---- lifecycle -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL for Anthropic clients."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        """The base URL for OpenAI clients (theirs include the /v1)."""
        return f"{self.url}/v1"

    def reset_limits(self) -> None:
        c = self.config
        self._req = _Bucket(c.rpm, c.burst_s) if c.rpm else None
        self._tok = _Bucket(c.tpm, c.burst_s) if c.tpm else None

    async def serve(self) -> None:
        self._server = await asyncio.start_server(self._conn, self.host, self.port, backlog=4096, limit=2**22)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> FakeProvider:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.serve())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-provider", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop and self._server:
            self._loop.call_soon_threadsafe(self._server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- HTTP ------------------------------------------------------------------------------
    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int((await reader.readline()).strip().split(b";")[0], 16)
                        if size == 0:
                            await reader.readline()
                            break
                        body += await reader.readexactly(size)
                        await reader.readline()
                else:
                    body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                status, resp_headers, payload = await self._handle(method, urlsplit(target).path, headers, body)
                if status == 0:  # a simulated timeout: drop the connection
                    writer.close()
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                ctype = resp_headers.pop("content-type", "application/json")
                head = [
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}",
                    f"content-type: {ctype}",
                    f"content-length: {len(data)}",
                    "connection: keep-alive",
                ]
                head += [f"{k}: {v}" for k, v in resp_headers.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            try:
                writer.close()
            except RuntimeError:
                pass

    async def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        if path == "/_stats":
            return 200, {}, asdict(self.stats)
        if not path.startswith("/v1/"):
            path = "/v1" + path
        flavour = "anthropic" if path.startswith("/v1/messages") else "openai"
        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
        if self.config.api_key is not None and key != self.config.api_key:
            return _error(flavour, 401, "authentication_error", "invalid x-api-key")
        if self._echoes_key(path):
            return self._echo_key(flavour, key)
        try:
            if method == "POST" and path == "/v1/messages":
                return await self._inference("anthropic", json.loads(body), key)
            if method == "POST" and path == "/v1/chat/completions":
                return await self._inference("openai", json.loads(body), key)
            if path.startswith("/v1/messages/batches"):
                return self._anthropic_batches(method, path, body)
            if path.startswith("/v1/files"):
                return self._files_api(method, path, headers, body)
            if path.startswith("/v1/batches"):
                return self._openai_batches(method, path, body)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            return _error(flavour, 400, "invalid_request_error", f"bad request: {exc}")
        return _error(flavour, 404, "not_found_error", f"no route {method} {path}")

    # ---- inference ------------------------------------------------------------------------
    def _echo_key(self, flavour: str, key: str) -> tuple[int, dict, Any]:
        """The `echo_key` fault: a 400 whose message repeats the presented API key."""
        self.stats.injected["echo_key"] = self.stats.injected.get("echo_key", 0) + 1
        return _error(flavour, 400, "invalid_request_error", f"proxy rejected the request made with key {key}")

    def _echoes_key(self, path: str) -> bool:
        """A call about a provider batch that holds an `[fault=echo_key]` item."""
        parts = path.rstrip("/").split("/")
        if path.startswith("/v1/messages/batches/") and len(parts) > 4:
            batch = self._batches.get(parts[4])
            held = json.dumps(batch["requests"]) if batch else ""
        elif path.startswith("/v1/batches/") and len(parts) > 3:
            batch = self._batches.get(parts[3])
            held = self._files.get(batch.get("req", {}).get("input_file_id", ""), b"").decode() if batch else ""
        else:
            return False
        return "[fault=echo_key]" in held

    def _fault_for(self, text: str) -> str | None:
        for kind, count in FAULT.findall(text):
            if kind == "item_malformed":
                continue
            if not count:
                return kind
            key = kind + hashlib.sha256(text.encode()).hexdigest()
            seen = self._seen[key] = self._seen.get(key, 0) + 1
            if seen <= int(count):
                return kind
        return None

    def _admit(self, tokens: int) -> tuple[int, dict, Any] | None:
        """Take one request and `tokens` from the buckets, or say why not (a 429)."""
        waits = []
        if self._req is not None:
            waits.append(("requests", self._req.wait_for(1)))
        if self._tok is not None:
            waits.append(("tokens", self._tok.wait_for(tokens)))
        blocked = [(what, w) for what, w in waits if w > 0]
        if blocked:
            what, wait = max(blocked, key=lambda x: x[1])
            if what == "requests":
                self.stats.rate_limited_requests += 1
            else:
                self.stats.rate_limited_tokens += 1
            return (
                429,
                {"retry-after": str(max(1, math.ceil(wait))), "retry-after-ms": str(int(wait * 1000) + 1)},
                (f"rate limit exceeded ({what} per minute)"),
            )
        if self._req is not None:
            self._req.level -= 1
        if self._tok is not None:
            self._tok.level -= min(tokens, self._tok.capacity)
        now = time.monotonic()
        self._window.append((now, tokens))
        self._window_tokens += tokens
        while self._window and self._window[0][0] < now - 60:
            self._window_tokens -= self._window.popleft()[1]
        self.stats.tokens_admitted += tokens
        self.stats.max_tokens_60s = max(self.stats.max_tokens_60s, self._window_tokens)
        self.stats.max_requests_60s = max(self.stats.max_requests_60s, len(self._window))
        return None

    def _limit_headers(self, flavour: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, bucket in (("requests", self._req), ("tokens", self._tok)):
            if bucket is None:
                continue
            bucket.refill()
            remaining = max(0, int(bucket.level))
            reset_s = (bucket.capacity - bucket.level) / bucket.rate
            if flavour == "anthropic":
                reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + reset_s))
                out[f"anthropic-ratelimit-{name}-limit"] = str(int(bucket.limit))
                out[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
                out[f"anthropic-ratelimit-{name}-reset"] = reset
            else:
                out[f"x-ratelimit-limit-{name}"] = str(int(bucket.limit))
                out[f"x-ratelimit-remaining-{name}"] = str(remaining)
                out[f"x-ratelimit-reset-{name}"] = f"{int(reset_s * 1000)}ms"
        return out

    async def _inference(self, flavour: str, body: dict, key: str = "") -> tuple[int, dict, Any]:
        self.stats.requests += 1
        self.recent.append(body)
        system, user, bundle = _prompt_of(flavour, body)
        text = system + "\n" + user
        fault = self._fault_for(user)
        if fault is None and self.config.fault_rate and self._rng.random() < self.config.fault_rate:
            fault = self._rng.choice(self.config.fault_kinds)
        if fault == "echo_key":  # refused at the door (by a proxy), never admitted
            return self._echo_key(flavour, key)
        # 429/529 are refused at the door, before the request is admitted (counted)
        if fault in ("429", "529"):
            return self._inject(flavour, fault)
        items = _answers(user, bundle)
        answer = {"judgements": items} if bundle else items[0]
        out_text = json.dumps(answer)
        in_tokens, out_tokens = tokens_of(text), tokens_of(out_text)
        refused = self._admit(in_tokens + out_tokens)
        if refused is not None:
            status, headers, msg = refused
            headers.update(self._limit_headers(flavour))
            _, _, payload = _error(flavour, 429, "rate_limit_error", msg)
            return status, headers, payload
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            lo, hi = self.config.latency_ms
            if hi > 0:
                await asyncio.sleep(self._rng.uniform(lo, hi) / 1000.0)
            if fault == "timeout":
                await asyncio.sleep(self.config.hang_s)
                return 0, {}, b""
        finally:
            self.stats.in_flight -= 1
        headers = self._limit_headers(flavour)
        if fault is not None and fault not in ("malformed", "max_tokens", "refusal"):
            return self._inject(flavour, fault, headers)
        stop = "end"
        if fault == "malformed":
            answer = {"verdict": "A wins, obviously"}
            out_text = "Essay A is better, I think."
        elif fault == "max_tokens":
            stop, out_text = "max_tokens", out_text[: len(out_text) // 2]
        elif fault == "refusal":
            stop = "refusal"
        cache_read = cache_write = 0
        sys_tokens = tokens_of(system) if system else 0
        cacheable = flavour == "openai" or "cache_control" in json.dumps(body.get("system", ""))
        if cacheable and system:
            if system in self._cache:
                cache_read = sys_tokens
            elif flavour == "anthropic":
                cache_write = sys_tokens
            self._cache.add(system)
        self.stats.ok += 1
        model = body.get("model", "unknown")
        if flavour == "anthropic":
            return (
                200,
                headers,
                _anthropic_message(model, body, answer, stop, in_tokens, out_tokens, cache_read, cache_write),
            )
        return 200, headers, _openai_completion(model, out_text, stop, in_tokens, out_tokens, cache_read)

    def _inject(self, flavour: str, fault: str, headers: dict[str, str] | None = None) -> tuple[int, dict, Any]:
        self.stats.injected[fault] = self.stats.injected.get(fault, 0) + 1
        headers = dict(headers or self._limit_headers(flavour))
        status = int(fault) if fault.isdigit() else 500
        kind = {
            429: "rate_limit_error",
            529: "overloaded_error",
            500: "api_error",
            400: "invalid_request_error",
            401: "authentication_error",
            404: "not_found_error",
        }.get(status, "api_error")
        if status == 429:
            headers["retry-after"] = "1"
        _, _, payload = _error(flavour, status, kind, f"injected {fault}")
        return status, headers, payload

    def _sync_answer(self, flavour: str, body: dict) -> tuple[int, Any]:
        """Answer one batch item at once (no limits, no latency; faults by marker)."""
        system, user, bundle = _prompt_of(flavour, body)
        fault = self._fault_for(user)
        model = body.get("model", "unknown")
        if fault in ("400", "500", "529", "429", "timeout"):
            status = 500 if fault == "timeout" else int(fault)
            return status, {
                "type": "invalid_request_error" if status == 400 else "api_error",
                "message": f"injected {fault}",
            }
        items = _answers(user, bundle)
        answer: Any = {"judgements": items} if bundle else items[0]
        out_text = json.dumps(answer)
        if fault == "malformed":
            answer, out_text = {"verdict": "A"}, "A is better"
        in_tokens, out_tokens = tokens_of(system + "\n" + user), tokens_of(out_text)
        stop = "max_tokens" if fault == "max_tokens" else "end"
        if flavour == "anthropic":
            return 200, _anthropic_message(model, body, answer, stop, in_tokens, out_tokens, 0, 0)
        return 200, _openai_completion(model, out_text, stop, in_tokens, out_tokens, 0)

    # ---- Anthropic Message Batches --------------------------------------------------------
    def _anthropic_batches(self, method: str, path: str, body: bytes) -> tuple[int, dict, Any]:
        parts = path.rstrip("/").split("/")  # ['', 'v1', 'messages', 'batches', id?, 'results'?]
        if method == "POST" and len(parts) == 4:
            req = json.loads(body)
            bid = "msgbatch_" + uuid.uuid4().hex[:20]
            self.stats.batches += 1
            self._batches[bid] = {"kind": "anthropic", "created": time.time(), "requests": req["requests"]}
            return 200, {}, self._anthropic_batch_obj(bid)
        bid = parts[4] if len(parts) > 4 else ""
        if bid not in self._batches:
            return _error("anthropic", 404, "not_found_error", f"no batch {bid}")
        if method == "GET" and len(parts) == 5:
            return 200, {}, self._anthropic_batch_obj(bid)
        if method == "POST" and parts[-1] == "cancel":
            self._cancel(bid)
            return 200, {}, self._anthropic_batch_obj(bid)
        if method == "GET" and parts[-1] == "results":
            lines = []
            for item in self._batches[bid]["requests"]:
                status, payload = self._sync_answer("anthropic", item["params"])
                if status == 200:
                    result = {"type": "succeeded", "message": payload}
                else:
                    result = {"type": "errored", "error": {"type": "error", "error": payload}}
                lines.append(json.dumps({"custom_id": item["custom_id"], "result": result}))
            return 200, {"content-type": "application/binary"}, ("\n".join(lines) + "\n").encode()
        return _error("anthropic", 404, "not_found_error", f"no route {method} {path}")

    def _anthropic_batch_obj(self, bid: str) -> dict:
        b = self._batches[bid]
        ended = time.time() - b["created"] >= self.config.batch_delay_s
        n = len(b["requests"])
        iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        return {
            "id": bid,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else n,
                "succeeded": n if ended else 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": iso(b["created"]),
            "expires_at": iso(b["created"] + 86400),
            "ended_at": iso(time.time()) if ended else None,
            "cancel_initiated_at": iso(b["cancelled"]) if "cancelled" in b else None,
            "archived_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{bid}/results" if ended else None,
        }

    # ---- OpenAI Files + Batch ---------------------------------------------------------------
    def _files_api(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        parts = path.rstrip("/").split("/")  # ['', 'v1', 'files', id?, 'content'?]
        if method == "POST" and len(parts) == 3:
            content, filename = _multipart_file(headers.get("content-type", ""), body)
            fid = "file-" + uuid.uuid4().hex[:24]
            self._files[fid] = content
            return 200, {}, _file_obj(fid, len(content), filename, "batch")
        fid = parts[3] if len(parts) > 3 else ""
        if fid not in self._files:
            return _error("openai", 404, "invalid_request_error", f"no file {fid}")
        if method == "GET" and parts[-1] == "content":
            return 200, {"content-type": "application/octet-stream"}, self._files[fid]
        if method == "GET":
            return 200, {}, _file_obj(fid, len(self._files[fid]), "file.jsonl", "batch")
        return _error("openai", 404, "invalid_request_error", f"no route {method} {path}")

    def _openai_batches(self, method: str, path: str, body: bytes) -> tuple[int, dict, Any]:
        parts = path.rstrip("/").split("/")  # ['', 'v1', 'batches', id?]
        if method == "POST" and len(parts) == 3:
            req = json.loads(body)
            if req["input_file_id"] not in self._files:
                return _error("openai", 400, "invalid_request_error", "unknown input_file_id")
            bid = "batch_" + uuid.uuid4().hex[:24]
            self.stats.batches += 1
            self._batches[bid] = {"kind": "openai", "created": time.time(), "req": req, "out": None}
            return 200, {}, self._openai_batch_obj(bid)
        bid = parts[3] if len(parts) > 3 else ""
        if bid not in self._batches:
            return _error("openai", 404, "invalid_request_error", f"no batch {bid}")
        if method == "POST" and parts[-1] == "cancel":
            self._cancel(bid)
        return 200, {}, self._openai_batch_obj(bid)

    def _cancel(self, bid: str) -> None:
        """Record a cancel (the batch still ends, and answers, as it would have)."""
        self.stats.batches_cancelled += 1
        self.cancelled.append(bid)
        self._batches[bid].setdefault("cancelled", time.time())

    def _openai_batch_obj(self, bid: str) -> dict:
        b = self._batches[bid]
        ended = time.time() - b["created"] >= self.config.batch_delay_s
        lines = [json.loads(x) for x in self._files[b["req"]["input_file_id"]].decode().splitlines() if x.strip()]
        if ended and b["out"] is None:
            out, err = [], []
            for item in lines:
                status, payload = self._sync_answer("openai", item["body"])
                rec = {
                    "id": "batch_req_" + uuid.uuid4().hex[:16],
                    "custom_id": item["custom_id"],
                    "response": {
                        "status_code": status,
                        "request_id": uuid.uuid4().hex,
                        "body": payload if status == 200 else {"error": payload},
                    },
                    "error": None,
                }
                (out if status == 200 else err).append(json.dumps(rec))
            b["out"] = "file-" + uuid.uuid4().hex[:24]
            self._files[b["out"]] = ("\n".join(out) + "\n").encode()
            if err:
                b["err"] = "file-" + uuid.uuid4().hex[:24]
                self._files[b["err"]] = ("\n".join(err) + "\n").encode()
        n = len(lines)
        return {
            "id": bid,
            "object": "batch",
            "endpoint": b["req"]["endpoint"],
            "errors": None,
            "input_file_id": b["req"]["input_file_id"],
            "completion_window": b["req"].get("completion_window", "24h"),
            "status": "completed" if ended else "in_progress",
            "output_file_id": b["out"] if ended else None,
            "error_file_id": b.get("err") if ended else None,
            "created_at": int(b["created"]),
            "in_progress_at": int(b["created"]),
            "expires_at": int(b["created"]) + 86400,
            "completed_at": int(time.time()) if ended else None,
            "request_counts": {"total": n, "completed": n if ended else 0, "failed": 0},
            "metadata": b["req"].get("metadata"),
        }


# ---- wire helpers -----------------------------------------------------------------------------
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    529: "Overloaded",
}


def _error(flavour: str, status: int, kind: str, message: str) -> tuple[int, dict, Any]:
    if flavour == "anthropic":
        return status, {}, {"type": "error", "error": {"type": kind, "message": message}}
    return status, {}, {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(block.get("text", "") for block in content if isinstance(block, dict))


def _prompt_of(flavour: str, body: dict) -> tuple[str, str, bool]:
    """(system text, user text, is it a bundle) of a request body."""
    if flavour == "anthropic":
        system = _text_of(body.get("system", ""))
        user = "\n".join(_text_of(m["content"]) for m in body["messages"] if m["role"] == "user")
        tools = body.get("tools") or []
        bundle = any(t.get("name", "").endswith("judgements") for t in tools)
    else:
        msgs = body["messages"]
        system = "\n".join(_text_of(m["content"]) for m in msgs if m["role"] in ("system", "developer"))
        user = "\n".join(_text_of(m["content"]) for m in msgs if m["role"] == "user")
        fmt = body.get("response_format") or {}
        bundle = fmt.get("json_schema", {}).get("name", "").endswith("judgements")
    return system, user, bundle


def _verdict(a: str, b: str) -> dict:
    qa, qb = QUALITY.search(a), QUALITY.search(b)
    sa = float(qa.group(1)) if qa else len(a) / 1000
    sb = float(qb.group(1)) if qb else len(b) / 1000
    winner = "A" if sa >= sb else "B"
    confidence = round(min(0.99, 0.5 + abs(sa - sb) / 10), 2)
    return {
        "winner": winner,
        "confidence": confidence,
        "justification": f"Essay {winner} argues more clearly and supports its claims better.",
    }


def _answers(user: str, bundle: bool) -> list[dict]:
    essays: dict[str, dict[str, str]] = {}
    for pos, item, _nonce, text in ESSAY.findall(user):
        essays.setdefault(item, {})[pos] = text
    if not bundle:
        pair = essays.get("", {})
        return [_verdict(pair.get("A", ""), pair.get("B", ""))]
    out = []
    for item_id in ITEM.findall(user):
        pair = essays.get(item_id, {})
        v = _verdict(pair.get("A", ""), pair.get("B", ""))
        if "[fault=item_malformed]" in pair.get("A", "") + pair.get("B", ""):
            v["winner"] = "C"
        out.append({"id": item_id, **v})
    return out


def _anthropic_message(
    model: str, body: dict, answer: Any, stop: str, in_tok: int, out_tok: int, cache_read: int, cache_write: int
) -> dict:
    tools = body.get("tools") or []
    if tools and stop != "refusal":
        content = [
            {"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:20], "name": tools[0]["name"], "input": answer}
        ]
    else:
        content = [{"type": "text", "text": "I can't help with that." if stop == "refusal" else json.dumps(answer)}]
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": {"end": "tool_use" if tools else "end_turn", "max_tokens": "max_tokens", "refusal": "refusal"}[
            stop
        ],
        "stop_sequence": None,
        "usage": {
            "input_tokens": max(0, in_tok - cache_read - cache_write),
            "output_tokens": out_tok,
            "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": cache_write,
        },
    }


def _openai_completion(model: str, out_text: str, stop: str, in_tok: int, out_tok: int, cached: int) -> dict:
    finish = {"end": "stop", "max_tokens": "length", "refusal": "stop"}[stop]
    message = {
        "role": "assistant",
        "content": None if stop == "refusal" else out_text,
        "refusal": "I can't help with that." if stop == "refusal" else None,
    }
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": in_tok,
            "completion_tokens": out_tok,
            "total_tokens": in_tok + out_tok,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def _file_obj(fid: str, size: int, filename: str, purpose: str) -> dict:
    return {
        "id": fid,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
        "status_details": None,
    }


def _multipart_file(content_type: str, body: bytes) -> tuple[bytes, str]:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        return body, "upload"
    for part in body.split(b"--" + m.group(1).encode()):
        head, _, content = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            fn = re.search(rb'filename="([^"]*)"', head)
            return content.rstrip(b"\r\n").removesuffix(b"\r\n"), (fn.group(1).decode() if fn else "upload")
    return b"", "upload"


def _range(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition("-")
    return float(lo), float(hi or lo)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--rpm", type=float, default=None)
    p.add_argument("--tpm", type=float, default=None)
    p.add_argument("--burst-s", type=float, default=5.0)
    p.add_argument("--latency-ms", default="0", help="e.g. 200-500")
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--api-key", default=None, help="require this key (default: accept any)")
    p.add_argument("--batch-delay-s", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    config = FakeConfig(
        rpm=a.rpm,
        tpm=a.tpm,
        burst_s=a.burst_s,
        latency_ms=_range(a.latency_ms),
        fault_rate=a.fault_rate,
        api_key=a.api_key,
        batch_delay_s=a.batch_delay_s,
        seed=a.seed,
    )
    server = FakeProvider(config, a.host, a.port)

    async def run() -> None:
        await server.serve()
        print(f"fake provider listening on {server.url}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
