"""Property-based fuzz of the admin API: schemathesis generates requests for every operation in
the live `/api/openapi.json`; no answer may be a 5xx, nor off its documented schema.

The document is read at run time, so endpoints added later are fuzzed without touching this file.
Each operation gets schemathesis's boundary cases (longest strings, largest numbers, one past
them, wrong types, missing fields) and Hypothesis-generated ones, valid and invalid, from a seed
fixed per operation, so a CI failure replays locally. Logout and password changes run with a
throw-away admin's tokens; login goes last, as its failures throttle the address for 15 minutes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.errors import Unsatisfiable
from hypothesis.internal import filtering, lambda_sources
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.schemas import OpenApiSchema

from agentwatch.admin.tokens import TokenClaims, issue_access_token
from tests.support import ADMIN_EMAIL, ADMIN_PASSWORD, Gateway

LOGIN = "POST /api/auth/login"
# They end or re-key the caller's own sessions: they get tokens nobody needs afterwards.
OWN_SESSION = frozenset(
    {"POST /api/auth/logout", "POST /api/auth/logout-all", "POST /api/auth/password"}
)
# Cases per operation: the valid boundary cases (they are what reaches a column's limits) up to
# a cap, a sample of the invalid ones, a few generated ones. Hypothesis stops early on
# operations with fewer distinct inputs.
BOUNDARY_VALID = 40
BOUNDARY_INVALID = 4
GENERATED_VALID = 5
GENERATED_INVALID = 3
ANONYMOUS = 3  # one without a token, one with a random one, one with a forged signature
CALL_TIMEOUT = 15
GENERATION = settings(
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # cases are recorded, never raised: no shrinking
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
    verbosity=Verbosity.quiet,
    print_blob=False,
)
# How schemathesis describes the boundary cases worth keeping first when there are too many.
TELLING = re.compile(r"Maximum|Minimum|Valid object|only required|all required properties and")
Planned = tuple[str, Case]  # (how the case was made, the case)


def _plain_lambda_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Name filter lambdas without parsing their source files.

    Hypothesis names every `.filter(lambda ...)` (only for reprs) by parsing the lambda's whole
    source file with `ast`; on CPython 3.11.7 that parse of schemathesis's 4,600-line coverage
    module intermittently raises "SystemError: AST constructor recursion depth mismatch" (a
    CPython bug, fixed in later 3.11 releases), which failed CI runs at random.
    """

    def plain(f: Any) -> str:
        return f"lambda <{f.__qualname__}>"

    monkeypatch.setattr(lambda_sources, "lambda_description", plain)
    monkeypatch.setattr(filtering, "lambda_description", plain)


def test_openapi_document_is_valid_and_typed(gateway: Gateway) -> None:
    schema = load_schema(gateway)
    schema.validate()  # against the OpenAPI 3 meta-schema
    assert str(schema.raw_schema["openapi"]).startswith("3.")
    found = operations(schema)
    untyped = [
        f"{operation.label} {status}"
        for operation in found
        if operation.path.startswith("/api/")
        for status, response in operation.definition.raw["responses"].items()
        if status.startswith("2") and status != "204" and not json_schema_of(response)
    ]
    assert not untyped, f"success responses without a JSON schema: {untyped}"
    assert sum(requires_token(schema, operation) for operation in found) > 1


def test_fuzzed_admin_api_answers_no_5xx(
    gateway: Gateway, hypothesis_home: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    _plain_lambda_names(monkeypatch)
    schema = load_schema(gateway)
    everything = operations(schema)
    run = FuzzRun(gateway)
    throwaway = ThrowawayAdmin(run)
    last = [op for op in everything if op.label == LOGIN]
    own = [op for op in everything if op.label in OWN_SESSION]
    for operation in everything:
        if operation not in last and operation not in own:
            for kind, case in all_cases(schema, operation):
                run.send_as_admin(kind, case)
    for operation in own:
        for kind, case in all_cases(schema, operation):
            run.send(kind, case, throwaway.headers())
    for operation in everything:
        if requires_token(schema, operation):
            for kind, case in anonymous_cases(operation):
                headers = bearer(forged_token()) if kind == "forged token" else {}
                run.send(kind, case, headers, refuse=True)
    for operation in last:
        for kind, case in all_cases(schema, operation):
            run.send(kind, case, {})

    assert run.http.get(f"{gateway.url}/readyz", timeout=CALL_TIMEOUT).status_code == 200
    counts = ", ".join(f"{count} {kind}" for kind, count in sorted(run.sent.items()))
    print(
        f"\napi fuzz: {run.sent.total()} cases over {len(everything)} operations in "
        f"{time.monotonic() - started:.1f}s ({counts}); super admin restored {run.relogins} times"
    )
    assert not run.findings, report(run.findings)


def report(findings: list[Finding]) -> str:
    """The first case of each operation and status in full, then how many more there were."""
    groups: dict[tuple[str, int], list[Finding]] = {}
    for finding in findings:
        groups.setdefault((finding.label, finding.status), []).append(finding)
    parts = [
        f"{group[0]}" + (f"\n({len(group) - 1} more like it)" if len(group) > 1 else "")
        for group in groups.values()
    ]
    return f"{len(findings)} failing cases:\n\n" + "\n\n".join(parts)


@pytest.fixture(scope="module")
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Hypothesis writes a cache beside the working directory; keep it out of the repository.
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


def anonymous_cases(operation: APIOperation) -> Iterator[Planned]:
    """Valid requests but for the token: schemathesis gives each a random bearer token; the
    first gets a forged one instead, the third none at all."""
    cases = generated_cases(operation, GenerationMode.POSITIVE, ANONYMOUS)
    for index, case in enumerate(cases):
        kind = ("forged token", "random token", "no token")[index % 3]
        if kind == "no token":
            headers = case.headers or {}
            case.headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        yield kind, case


def all_cases(schema: OpenApiSchema, operation: APIOperation) -> Iterator[Planned]:
    for mode, limit in (
        (GenerationMode.POSITIVE, BOUNDARY_VALID),
        (GenerationMode.NEGATIVE, BOUNDARY_INVALID),
    ):
        config = schema.config.generation_for(operation=operation)
        found = list(
            schema.iter_coverage_cases(operation, generation_modes=[mode], generation_config=config)
        )
        for case in spread(found, limit):
            yield f"boundary {mode.value}", case
    for mode, count in (
        (GenerationMode.POSITIVE, GENERATED_VALID),
        (GenerationMode.NEGATIVE, GENERATED_INVALID),
    ):
        for case in generated_cases(operation, mode, count):
            yield f"generated {mode.value}", case


def spread(cases: list[Case], limit: int) -> list[Case]:
    """At most `limit` cases: the telling ones first (a field at its maximum or minimum, one
    field alone: they reach column limits and unique names), the rest taken evenly."""
    if len(cases) <= limit:
        return cases
    first = [case for case in cases if TELLING.search(description(case))]
    rest = [case for case in cases if not TELLING.search(description(case))]
    room = max(0, limit - len(first))
    return first[:limit] + [rest[i * len(rest) // room] for i in range(min(room, len(rest)))]


def description(case: Case) -> str:
    return str(getattr(case.meta.phase.data, "description", "")) if case.meta else ""


def generated_cases(operation: APIOperation, mode: GenerationMode, count: int) -> list[Case]:
    found: list[Case] = []
    digest = hashlib.blake2b(f"{operation.label}:{mode.value}".encode(), digest_size=8).digest()

    @seed(int.from_bytes(digest))
    @settings(GENERATION, max_examples=count)
    @given(case=operation.as_strategy(generation_mode=mode))
    def collect(case: Case) -> None:
        found.append(case)

    try:
        collect()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        # No parameter and no body (`/healthz`): there is nothing to make invalid.
    return found


@dataclass
class Finding:
    label: str
    request: str
    status: int
    problem: str
    gateway_log: str

    def __str__(self) -> str:
        # Library frames drown the handler's own lines; keep the gateway's and the error.
        lines = self.gateway_log.splitlines()
        ours = [line for i, line in enumerate(lines) if not in_library_frame(lines, i)]
        log = "\n".join(ours).strip() or "(nothing logged)"
        head = f"{self.label} answered {self.status}\n{self.request}\n{self.problem.strip()}"
        return f"{head}\n--- gateway log ---\n{log}"


def in_library_frame(lines: list[str], index: int) -> bool:
    for line in reversed(lines[max(0, index - 3) : index + 1]):
        if line.lstrip().startswith("File "):
            return "/site-packages/" in line
    return False


@dataclass
class FuzzRun:
    """Sends cases to one gateway, keeps the super admin's token working, records findings."""

    gateway: Gateway
    http: requests.Session = field(default_factory=requests.Session)
    token: str = ""
    sent: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    relogins: int = 0

    def admin_headers(self) -> dict[str, str]:
        if not self.token:
            self.token = self.login(ADMIN_EMAIL, ADMIN_PASSWORD)
        return bearer(self.token)

    def login(self, email: str, password: str) -> str:
        body = {"email": email, "password": password}
        response = self.http.post(
            f"{self.gateway.url}/api/auth/login", json=body, timeout=CALL_TIMEOUT
        )
        assert response.status_code == 200, f"login as {email}: {response.text}"
        return str(response.json()["access_token"])

    def make_super_admin(self, email: str, password: str) -> None:
        done = self.gateway.cli("users", "create-admin", "--email", email, "--password", password)
        assert done.returncode == 0, done.stderr

    def send(self, kind: str, case: Case, headers: dict[str, str], *, refuse: bool = False) -> int:
        """`refuse`: the call has no valid token, so a 2xx is a finding too."""
        self.sent[kind] += 1
        mark = self.gateway.log_path.stat().st_size
        try:
            response = case.call(
                base_url=self.gateway.url, session=self.http, headers=headers, timeout=CALL_TIMEOUT
            )
        except requests.Timeout as exc:
            curl = case.as_curl_command(headers=headers, base_url=self.gateway.url)
            raise AssertionError(
                f"no answer in {CALL_TIMEOUT}s:\n{curl}\n{self.log_since(mark)}"
            ) from exc
        succeeded = 200 <= response.status_code < 300
        # Every answer is held to its documented schema: successes and `{"detail": ...}` errors.
        checks = [not_a_server_error, response_schema_conformance]
        problem = ""
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except FailureGroup as failures:
            problem = re.sub(r"\n\s*\n", "\n", str(failures))
        if refuse and succeeded:
            problem += "\nsucceeded without a valid token"
        if problem:
            curl = case.as_curl_command(headers=headers, base_url=self.gateway.url)
            log = self.log_since(mark)
            self.findings.append(
                Finding(case.operation.label, curl, response.status_code, problem, log)
            )
        return response.status_code

    def send_as_admin(self, kind: str, case: Case) -> None:
        status = self.send(kind, case, self.admin_headers())
        if status in (401, 403) and not self.still_super_admin():
            # An earlier case disabled, demoted, deleted or re-keyed the account: the CLI
            # restores it (enabled, super admin, known password), then the case is replayed.
            self.relogins += 1
            self.make_super_admin(ADMIN_EMAIL, ADMIN_PASSWORD)
            self.token = ""
            self.send(kind, case, self.admin_headers())

    def still_super_admin(self) -> bool:
        url = f"{self.gateway.url}/api/auth/me"
        me = self.http.get(url, headers=self.admin_headers(), timeout=CALL_TIMEOUT)
        return me.status_code == 200 and me.json().get("is_super_admin") is True

    def log_since(self, offset: int) -> str:
        time.sleep(0.2)  # let the gateway finish writing a traceback
        with self.gateway.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")


@dataclass
class ThrowawayAdmin:
    """A second super admin, whose sessions the logout and password cases may end."""

    run: FuzzRun
    email: str = field(default_factory=lambda: f"fuzz-{secrets.token_hex(4)}@example.com")
    password: str = field(default_factory=lambda: f"Fz-{secrets.token_urlsafe(18)}")
    created: bool = False

    def headers(self) -> dict[str, str]:
        """A fresh token per call: the previous case may have revoked the last one."""
        if not self.created:
            self.run.make_super_admin(self.email, self.password)
            self.created = True
        return bearer(self.run.login(self.email, self.password))


def load_schema(gateway: Gateway) -> OpenApiSchema:
    return schemathesis.openapi.from_url(f"{gateway.url}/api/openapi.json", timeout=CALL_TIMEOUT)


def operations(schema: OpenApiSchema) -> list[APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]  # ok() raises on a bad one


def requires_token(schema: OpenApiSchema, operation: APIOperation) -> bool:
    return bool(
        schema.raw_schema["paths"][operation.path][operation.method.lower()].get("security")
    )


def json_schema_of(response: dict[str, Any]) -> object:
    return response.get("content", {}).get("application/json", {}).get("schema")


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def forged_token() -> str:
    """A super admin's token, well formed, signed with a key the gateway does not have."""
    claims = TokenClaims(1, 1, ADMIN_EMAIL, "org_admin", is_super_admin=True)
    return issue_access_token(claims, secrets.token_hex(32))
