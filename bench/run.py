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

import uvloop

from loadgen import Result, Target, fetch, run_python, run_wrk, wrk_available
from machine import ForeignCpuMeter, cpu_model, gateway_revision

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"
PLAIN_BODY = b'{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'
STREAM_BODY = b'{"model":"bench-model","messages":[{"role":"user","content":"hi"}],"stream":true}'
# With two or more cores the gateway gets core 0 to itself; the upstream and every load
# generator share core 1, in the direct runs too, so the only difference is the gateway hop.
GATEWAY_CPUS = {0}
LOAD_CPUS = {1}


@dataclass(frozen=True, slots=True)
class Row:
    target: str
    mode: str
    concurrency: int
    result: Result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
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
            direct = Target(HOST, upstream_port, CHAT_PATH, PLAIN_BODY, "unused")
            through = Target(HOST, gateway_port, CHAT_PATH, PLAIN_BODY, tenant_key)
            for process, target in ((upstream, direct), (gateway, through)):
                _wait_until_up(process, target)
                _check_stream(target)
            meter = ForeignCpuMeter([upstream.pid, gateway.pid])
            rows = _measure_all({"direct": direct, "gateway": through}, args.duration, args.warmup)
            foreign_cores = meter.cores_used_by_others()
    report = _report(rows, args.duration, pin, foreign_cores)
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


def _wait_until_up(process: subprocess.Popen[bytes], target: Target) -> None:
    """Poll until one real request succeeds; the health check alone would not prove routing."""
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
            raise SystemExit(f"bench: port {target.port} answered {status}: {body[:500]!r}")
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: nothing answered on port {target.port} within 60 s")
        time.sleep(0.2)


def _check_stream(plain: Target) -> None:
    stream = Target(plain.host, plain.port, plain.path, STREAM_BODY, plain.api_key)
    status, body = asyncio.run(fetch(stream))
    if status != 200 or not body.endswith(b"data: [DONE]\n\n"):
        raise SystemExit(f"bench: port {plain.port} streamed {status}: {body[-500:]!r}")


def _measure_all(targets: dict[str, Target], duration: float, warmup: float) -> list[Row]:
    rows: list[Row] = []
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        for name, plain in targets.items():
            stream = Target(plain.host, plain.port, plain.path, STREAM_BODY, plain.api_key)
            for mode, target in (("non-stream", plain), ("stream", stream)):
                for concurrency in (1, 32):
                    print(f"bench: {name} {mode} c={concurrency}", file=sys.stderr, flush=True)
                    # wrk cannot time the first byte, so streams always use the Python client.
                    use_wrk = concurrency > 1 and mode == "non-stream" and wrk_available()
                    for seconds in (warmup, duration):
                        if use_wrk:
                            result = run_wrk(target, concurrency, seconds)
                        else:
                            result = runner.run(run_python(target, concurrency, seconds))
                    rows.append(Row(name, mode, concurrency, result))
    return rows


def _report(rows: list[Row], duration: float, pinned: bool, foreign_cores: float | None) -> str:
    def ms(value: float) -> str:
        return f"{value:.2f}"

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
        "- body: one user message `hi`; non-stream latency is the full response, stream "
        "TTFB is the first body byte, stream total the final `data: [DONE]`",
        "",
        "| target | mode | c | client | req/s | errors | p50 ms | p90 ms | p99 ms "
        "| TTFB p50 | TTFB p90 | TTFB p99 |",
        "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        r = row.result
        # Non-stream rows have a first body byte too, but it says nothing there.
        ttfb = r.ttfb_ms if row.mode == "stream" else None
        ttfb_cells = [ms(ttfb.p50), ms(ttfb.p90), ms(ttfb.p99)] if ttfb else ["", "", ""]
        cells = [
            row.target,
            row.mode,
            str(row.concurrency),
            r.tool,
            f"{r.requests_per_second:,.0f}",
            str(r.errors),
            ms(r.latency_ms.p50),
            ms(r.latency_ms.p90),
            ms(r.latency_ms.p99),
            *ttfb_cells,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Added latency at c=1 (gateway minus direct):", ""]
    lines += ["| mode | measure | p50 ms | p99 ms |", "|---|---|--:|--:|"]
    found = {(row.target, row.mode, row.concurrency): row.result for row in rows}
    for mode in ("non-stream", "stream"):
        direct, gateway = found[("direct", mode, 1)], found[("gateway", mode, 1)]
        pairs = [("total", direct.latency_ms, gateway.latency_ms)]
        if mode == "stream" and direct.ttfb_ms and gateway.ttfb_ms:
            pairs.insert(0, ("TTFB", direct.ttfb_ms, gateway.ttfb_ms))
        for measure, before, after in pairs:
            lines.append(
                f"| {mode} | {measure} | {ms(after.p50 - before.p50)} | "
                f"{ms(after.p99 - before.p99)} |"
            )
    return "\n".join(lines) + "\n"


def _command() -> str:
    return shlex.join(["uv", "run", "python", "bench/run.py", *sys.argv[1:]])


if __name__ == "__main__":
    main()
