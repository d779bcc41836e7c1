"""Load generators for the benchmark: a small keep-alive HTTP/1.1 client and a `wrk` wrapper.

The Python client measures what wrk cannot (time to the first body byte of a stream); wrk,
written in C, drives the c=32 throughput runs without eating the gateway's CPU.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httptools


@dataclass(frozen=True, slots=True)
class Percentiles:
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, samples_ms: list[float]) -> Percentiles:
        ordered = sorted(samples_ms)

        def rank(q: float) -> float:  # nearest-rank, so every figure is a measured sample
            return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

        return cls(rank(0.50), rank(0.90), rank(0.99))


@dataclass(frozen=True, slots=True)
class Result:
    tool: str
    requests: int
    errors: int
    seconds: float
    latency_ms: Percentiles
    ttfb_ms: Percentiles | None = None

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint under test and the exact request sent to it."""

    host: str
    port: int
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...]  # besides Host, Content-Type and Content-Length

    def raw_request(self) -> bytes:
        extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers)
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n"
        )
        return head.encode() + self.body


class _Connection(asyncio.Protocol):
    """One keep-alive connection that sends a request and waits for its full response."""

    def __init__(self, keep_body: bool) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._done: asyncio.Future[int] | None = None
        self._keep_body = keep_body
        self.body = bytearray()
        self.first_body_ns = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError("the server closed the connection"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._done is not None and not self._done.done():
                self._done.set_exception(exc)

    def on_body(self, body: bytes) -> None:
        if not self.first_body_ns:
            self.first_body_ns = time.perf_counter_ns()
        if self._keep_body:
            self.body += body

    def on_message_complete(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(self._parser.get_status_code())

    async def exchange(self, request: bytes) -> int:
        """Send one request; the HTTP status once the last byte of the response is in."""
        assert self._transport is not None
        self._done = asyncio.get_running_loop().create_future()
        self.first_body_ns = 0
        self.body.clear()
        self._transport.write(request)
        return await self._done

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _connect(target: Target, keep_body: bool = False) -> _Connection:
    loop = asyncio.get_running_loop()
    _, connection = await loop.create_connection(
        lambda: _Connection(keep_body), target.host, target.port
    )
    return connection


async def fetch(target: Target) -> tuple[int, bytes]:
    """One request on a fresh connection: status and body, for sanity checks."""
    connection = await _connect(target, keep_body=True)
    try:
        status = await connection.exchange(target.raw_request())
        return status, bytes(connection.body)
    finally:
        connection.close()


async def run_python(target: Target, concurrency: int, seconds: float) -> Result:
    """`concurrency` connections, each sending requests back-to-back for `seconds`."""
    request = target.raw_request()
    totals: list[float] = []
    ttfbs: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        connection = await _connect(target)
        while time.perf_counter() < deadline:
            started = time.perf_counter_ns()
            try:
                status = await connection.exchange(request)
            except (ConnectionError, httptools.HttpParserError):
                errors += 1
                connection.close()
                connection = await _connect(target)
                continue
            finished = time.perf_counter_ns()
            if status != 200:
                errors += 1
                continue
            totals.append((finished - started) / 1e6)
            ttfbs.append((connection.first_body_ns - started) / 1e6)
        connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    if not totals:
        raise RuntimeError(f"no successful request to {target.path} on port {target.port}")
    return Result(
        "python", len(totals), errors, elapsed, Percentiles.of(totals), Percentiles.of(ttfbs)
    )


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(target: Target, concurrency: int, seconds: float) -> Result:
    """wrk with one thread (it needs a core to itself at most) and its latency histogram."""
    with tempfile.TemporaryDirectory() as workdir:
        script = Path(workdir) / "post.lua"
        # A Lua long string takes the JSON body verbatim, quotes and all.
        body = "[==[" + target.body.decode() + "]==]"
        headers = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in target.headers)
        script.write_text(_WRK_SCRIPT.format(body=body) + headers)
        command = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            f"http://{target.host}:{target.port}{target.path}",
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_wrk(output)


def parse_wrk(output: str) -> Result:
    def number(pattern: str) -> float:
        match = re.search(pattern, output)
        if match is None:
            raise RuntimeError(f"unexpected wrk output (no {pattern!r}):\n{output}")
        return float(match.group(1))

    def latency(percent: int) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"unexpected wrk output (no {percent}% latency):\n{output}")
        return float(match.group(1)) * _UNITS_MS[match.group(2)]

    completed = int(number(r"(\d+) requests in"))
    seconds = completed / number(r"Requests/sec:\s+([\d.]+)")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    rejected = int(non_2xx.group(1)) if non_2xx is not None else 0
    errors = rejected
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors is not None:
        errors += sum(int(count) for count in socket_errors.groups())
    return Result(
        "wrk",
        completed - rejected,
        errors,
        seconds,
        Percentiles(latency(50), latency(90), latency(99)),
    )
