"""Gateway errors and their OpenAI-shaped JSON: `{"error": {"message", "type", "code"}}`."""

from __future__ import annotations

from collections.abc import Sequence

import orjson


class GatewayError(Exception):
    """An error the client should see, with the HTTP status and OpenAI error fields."""

    status = 500
    type = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class DlpBlocked(GatewayError):
    """The data loss prevention policy refused the call; names the detectors, never the data."""

    status = 400
    type = "dlp_blocked"
    code = "dlp_blocked"

    def __init__(self, detectors: Sequence[str], *, where: str = "request") -> None:
        super().__init__(
            f"the {where} was blocked by the data loss prevention policy; "
            f"detectors: {', '.join(detectors)}"
        )
        self.detectors = list(detectors)
        self.where = where
        self.partial = b""  # a stream's events from before the blocked value, safe to send

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                    "detectors": self.detectors,
                }
            }
        )


class UnknownModel(InvalidRequest):
    code = "model_not_found"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotAllowed(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class BodyTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UpstreamError(GatewayError):
    """The provider failed; `retryable` tells routing whether another attempt may succeed."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class UpstreamRateLimited(UpstreamError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamOverloaded(UpstreamError):
    """The provider is overloaded (Anthropic's 529, Gemini's 503): retryable elsewhere."""

    status = 503
    type = "overloaded_error"
    code = "upstream_overloaded"


class UpstreamRejected(UpstreamError):
    """The provider refused the request itself (bad parameters, context length): not retryable."""

    status = 400
    type = "invalid_request_error"
    code = "upstream_rejected"
    retryable = False


# Refusals of the limit stage (agentwatch.spend): a rate or concurrency limit, a budget, or
# a shared limit store that cannot be reached under the closed failure policy.
class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceeded(GatewayError):
    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class LimitsUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "limits_unavailable"
