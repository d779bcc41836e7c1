"""Measure the latency AgentWatch adds: the demo upstream alone, then through the gateway.

Run with `uv run python bench/run.py`; prints a markdown report and writes it to
bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import uvloop

from agentwatch.demo_upstream import PACE_SECONDS, PACED_SUFFIX, REPLY
from loadgen import Percentiles, Result, Target, fetch, run_python, run_wrk, wrk_available
from machine import ForeignCpuMeter, cpu_model, gateway_revision

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
ANTHROPIC_VERSION = "2023-06-01"
CHAT_DONE = b"data: [DONE]\n\n"
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
# Every route must deliver the whole canned reply; its last word is the last one to arrive.
REPLY_TAIL = REPLY.rsplit(" ", 1)[-1].encode()
CONCURRENCIES = (1, 32)
NON_STREAM, STREAM, PACED = "non-stream", "stream", "paced stream"
# With two or more cores the gateway gets core 0 to itself; the upstream and every load
# generator share core 1, in the direct runs too, so the only difference is the gateway hop.
GATEWAY_CPUS = {0}
LOAD_CPUS = {1}


@dataclass(frozen=True, slots=True)
class Route:
    """One way to reach the demo upstream: directly or through the gateway, by one API."""

    name: str
    api: str  # "chat" (POST /v1/chat/completions) or "messages" (Anthropic's /v1/messages)
    port: int
    model: str
    api_key: str
    baseline: str | None = None  # the direct route whose latency this one adds to
    non_stream: bool = False  # measured without streaming too

    def target(self, mode: str) -> Target:
        model = self.model + PACED_SUFFIX if mode == PACED else self.model
        body: dict[str, object] = {"model": model}
        if self.api == "messages":
            body["max_tokens"] = 256
        body["messages"] = [{"role": "user", "content": "hi"}]
        if mode != NON_STREAM:
            body["stream"] = True
        if self.api == "chat":
            return Target(
                HOST,
                self.port,
                CHAT_PATH,
                orjson.dumps(body),
                (("Authorization", f"Bearer {self.api_key}"),),
            )
        # As Anthropic's SDK sends them; the gateway takes x-api-key as well as a bearer token.
        headers = (("x-api-key", self.api_key), ("anthropic-version", ANTHROPIC_VERSION))
        return Target(HOST, self.port, MESSAGES_PATH, orjson.dumps(body), headers)

    @property
    def stream_end(self) -> bytes:
        return CHAT_DONE if self.api == "chat" else MESSAGE_STOP

    def plan(self) -> list[tuple[str, int]]:
        """(mode, concurrency) pairs to measure; paced streams are slow by design, so c=1 only."""
        modes = [NON_STREAM, STREAM] if self.non_stream else [STREAM]
        return [(mode, c) for mode in modes for c in CONCURRENCIES] + [(PACED, 1)]


@dataclass(frozen=True, slots=True)
class Row:
    route: str
    mode: str
    concurrency: int
    result: Result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each one")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    if not wrk_available():
        print(
            "bench: wrk is not installed (apt-get install -y wrk); the c=32 runs fall back to "
            "the Python client, which shares a core with the upstream and may cap throughput",
            file=sys.stderr,
        )
    if pin:
        os.sched_setaffinity(0, LOAD_CPUS)  # wrk and the Python client inherit this
    tenant_key = "aw-" + secrets.token_urlsafe(40)[:37]
    upstream_port, gateway_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="agentwatch-bench-") as data_dir:
        env = {
            **os.environ,
            "AGENTWATCH_DATA_DIR": data_dir,
            "LOG_LEVEL": "WARNING",
            "BENCH_TENANT_KEY": tenant_key,
            "BENCH_UPSTREAM_PORT": str(upstream_port),
        }
        agentwatch = [sys.executable, "-m", "agentwatch"]
        upstream_command = [*agentwatch, "demo-upstream", "--port", str(upstream_port)]
        gateway_command = [
            *agentwatch,
            *("serve", "--config", str(BENCH_DIR / "gateway.yaml"), "--port", str(gateway_port)),
        ]
        with (
            _process("upstream", upstream_command, env, LOAD_CPUS if pin else None) as upstream,
            _process("gateway", gateway_command, env, GATEWAY_CPUS if pin else None) as gateway,
        ):
            routes = _routes(upstream_port, gateway_port, tenant_key)
            by_name = {route.name: route for route in routes}
            _wait_until_up(upstream, by_name["direct chat"])
            _wait_until_up(gateway, by_name["gateway chat → openai"])
            for route in routes:
                _check_streams(route)
            meter = ForeignCpuMeter([upstream.pid, gateway.pid])
            rows = _measure_all(routes, args.duration, args.warmup)
            foreign_cores = meter.cores_used_by_others()
    report = _report(routes, rows, args.duration, pin, foreign_cores)
    print(report)
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    (results / "latest.md").write_text(report)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _process(
    name: str, command: list[str], env: dict[str, str], cpus: set[int] | None
) -> Iterator[subprocess.Popen[bytes]]:
    # Output goes to a file, not a pipe: a pipe nobody reads would block a chatty server.
    log_path = Path(env["AGENTWATCH_DATA_DIR"]) / f"{name}.log"
    # The pin is set before exec, so every thread the server later starts inherits it.
    pin: Callable[[], None] | None = None if cpus is None else lambda: os.sched_setaffinity(0, cpus)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin
        )
    failed = False
    try:
        yield process
    except BaseException:
        failed = True
        raise
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            print(f"bench: the {name} ignored SIGTERM for 20 s and was killed", file=sys.stderr)
        if failed or process.returncode not in (0, -signal.SIGTERM):
            print(f"bench: the {name} exited with {process.returncode}; its log:", file=sys.stderr)
            print(log_path.read_text(errors="replace")[-5000:], file=sys.stderr)


def _routes(upstream_port: int, gateway_port: int, tenant_key: str) -> list[Route]:
    """The direct routes first (the upstream's own latency), then the gateway's, each paired
    with the direct route that speaks its upstream's API. After the arrow, the type of the
    gateway's provider; the model names are those in gateway.yaml."""
    up, gw, key = upstream_port, gateway_port, tenant_key
    return [
        Route("direct chat", "chat", up, "demo-chat", "unused", non_stream=True),
        Route("direct messages", "messages", up, "claude-sonnet-4-5", "unused"),
        Route(
            "gateway chat → openai",
            *("chat", gw, "bench-model", key, "direct chat"),
            non_stream=True,
        ),
        Route(
            "gateway messages → anthropic",
            *("messages", gw, "bench-claude", key, "direct messages"),
        ),
        Route("gateway chat → anthropic", "chat", gw, "bench-claude", key, "direct messages"),
        Route("gateway messages → openai", "messages", gw, "bench-model", key, "direct chat"),
    ]


def _wait_until_up(process: subprocess.Popen[bytes], route: Route) -> None:
    """Poll until one real request succeeds; the health check alone would not prove routing."""
    target = route.target(NON_STREAM)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise SystemExit(f"bench: {process.args!r} exited with {process.returncode}")
        try:
            status, body = asyncio.run(fetch(target))
        except OSError:
            status, body = 0, b""
        if status == 200 and b'"chat.completion"' in body:
            return
        if status != 0:
            raise SystemExit(f"bench: {route.name} answered {status}: {body[:500]!r}")
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: nothing answered on port {route.port} within 60 s")
        time.sleep(0.2)


def _check_streams(route: Route) -> None:
    """A route that streams an error or a truncated reply would otherwise be benchmarked."""
    for mode in (STREAM, PACED):
        status, body = asyncio.run(fetch(route.target(mode)))
        if status != 200 or not body.endswith(route.stream_end) or REPLY_TAIL not in body:
            raise SystemExit(f"bench: {route.name} {mode} got {status}: {body[-500:]!r}")


def _measure_all(routes: list[Route], duration: float, warmup: float) -> list[Row]:
    rows: list[Row] = []
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        for route in routes:
            for mode, concurrency in route.plan():
                print(f"bench: {route.name} {mode} c={concurrency}", file=sys.stderr, flush=True)
                target = route.target(mode)
                # wrk cannot time the first byte, so streams always use the Python client.
                use_wrk = concurrency > 1 and mode == NON_STREAM and wrk_available()
                for seconds in (warmup, duration):
                    if use_wrk:
                        result = run_wrk(target, concurrency, seconds)
                    else:
                        result = runner.run(run_python(target, concurrency, seconds))
                rows.append(Row(route.name, mode, concurrency, result))
    return rows


TTFB_TARGET_MS = 2.0  # the bound on what the gateway may add to a stream's first byte


def _report(
    routes: list[Route],
    rows: list[Row],
    duration: float,
    pinned: bool,
    foreign_cores: float | None,
) -> str:
    lines = [
        f"# AgentWatch gateway benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        f"- gateway code: {gateway_revision()}; command: `{_command()}`",
        "- other processes kept "
        + ("an unknown number of" if foreign_cores is None else f"{foreign_cores:.2f}")
        + " cores busy on average while this measured",
        f"- {duration:g} s per row; "
        + (
            "gateway pinned to core 0, upstream and load generator to core 1"
            if pinned
            else "no core pinning"
        ),
        "- routes: `chat` is POST /v1/chat/completions, `messages` POST /v1/messages "
        "(Anthropic); after the arrow, the type of the gateway's provider (the demo upstream "
        "either way), so `chat → anthropic` and `messages → openai` are translated",
        "- body: one user message `hi`; non-stream latency is the full response, stream "
        "TTFB is the first body byte, stream total the last event (`data: [DONE]` or "
        "`message_stop`)",
        f"- a paced stream pauses {PACE_SECONDS * 1000:g} ms after its first event (the "
        "`-paced` models), so a gateway that held events back would show it in TTFB",
        "",
        "| route | mode | c | client | req/s | errors | p50 ms | p90 ms | p99 ms "
        "| TTFB p50 | TTFB p90 | TTFB p99 |",
        "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        r = row.result
        # Non-stream rows have a first body byte too, but it says nothing there.
        ttfb = r.ttfb_ms if row.mode != NON_STREAM else None
        ttfb_cells = [_ms(ttfb.p50), _ms(ttfb.p90), _ms(ttfb.p99)] if ttfb else ["", "", ""]
        cells = [
            row.route,
            row.mode,
            str(row.concurrency),
            r.tool,
            f"{r.requests_per_second:,.0f}",
            str(r.errors),
            _ms(r.latency_ms.p50),
            _ms(r.latency_ms.p90),
            _ms(r.latency_ms.p99),
            *ttfb_cells,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Added latency at c=1 (gateway route minus its direct route):", ""]
    lines += ["| route | vs | mode | measure | p50 ms | p99 ms |", "|---|---|---|---|--:|--:|"]
    found = {(row.route, row.mode, row.concurrency): row.result for row in rows}
    added_ttfb: dict[str, list[tuple[str, float, float]]] = {STREAM: [], PACED: []}
    for route in routes:
        if route.baseline is None:
            continue
        for mode in (NON_STREAM, STREAM, PACED):
            if (route.name, mode, 1) not in found:
                continue
            direct, gateway = found[(route.baseline, mode, 1)], found[(route.name, mode, 1)]
            pairs: list[tuple[str, Percentiles | None, Percentiles | None]] = []
            if mode != NON_STREAM:
                pairs.append(("TTFB", direct.ttfb_ms, gateway.ttfb_ms))
            pairs.append(("total", direct.latency_ms, gateway.latency_ms))
            for measure, before, after in pairs:
                if before is None or after is None:
                    continue
                p50, p99 = after.p50 - before.p50, after.p99 - before.p99
                if measure == "TTFB":
                    added_ttfb[mode].append((route.name, p50, p99))
                cells = [route.name, route.baseline, mode, measure, _ms(p50), _ms(p99)]
                lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [_ttfb_verdict(mode, added) for mode, added in added_ttfb.items()]
    return "\n".join(lines) + "\n"


def _ttfb_verdict(mode: str, added: list[tuple[str, float, float]]) -> str:
    """Whether each gateway stream's first byte stays within TTFB_TARGET_MS of the upstream's;
    `added` holds (route, added p50, added p99)."""
    verdicts = []
    for label, values in (
        ("p50", [(name, p50) for name, p50, _ in added]),
        ("p99", [(name, p99) for name, _, p99 in added]),
    ):
        over = [(name, value) for name, value in values if value > TTFB_TARGET_MS]
        if over:
            missed = ", ".join(f"{name} {_ms(value)}" for name, value in over)
            verdicts.append(f"{label} missed on {len(over)} of {len(values)} ({missed})")
        else:
            worst = max(value for _, value in values)
            verdicts.append(f"{label} met on all {len(values)} routes (worst {_ms(worst)})")
    return f"- {mode}, added TTFB within {TTFB_TARGET_MS:g} ms at c=1: " + "; ".join(verdicts) + "."


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _command() -> str:
    return shlex.join(["uv", "run", "python", "bench/run.py", *sys.argv[1:]])


if __name__ == "__main__":
    main()
