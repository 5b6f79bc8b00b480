"""The typed seam between the runner and the suites: responses keyed by their request.

Requests are frozen pydantic models, hashable by value, so a request asked for by three
suites is one key. Indexing is typed per request kind — ``responses[GenerateRequest(...)]`` is a
:class:`GenerateResponse` to the type checker — so a suite that reads the wrong field of the
wrong response fails ``mypy``, not a run.
"""

from __future__ import annotations

from typing import overload

from dpo_harness.schema import (
    GenerateRequest,
    GenerateResponse,
    LoglikelihoodRequest,
    LoglikelihoodResponse,
    ParityRequest,
    ParityResponse,
    ProbeRequest,
    ProbeResponse,
    Request,
    Response,
    RollingLoglikelihoodRequest,
    RollingLoglikelihoodResponse,
    TrainingLogRequest,
    TrainingLogResponse,
    WeightsRequest,
    WeightsResponse,
)

__all__ = ["Responses"]


class Responses:
    """Every response of one evaluation, keyed by request."""

    def __init__(self) -> None:
        self._data: dict[Request, Response] = {}

    @overload
    def __getitem__(self, req: GenerateRequest) -> GenerateResponse: ...
    @overload
    def __getitem__(self, req: LoglikelihoodRequest) -> LoglikelihoodResponse: ...
    @overload
    def __getitem__(self, req: RollingLoglikelihoodRequest) -> RollingLoglikelihoodResponse: ...
    @overload
    def __getitem__(self, req: ProbeRequest) -> ProbeResponse: ...
    @overload
    def __getitem__(self, req: WeightsRequest) -> WeightsResponse: ...
    @overload
    def __getitem__(self, req: TrainingLogRequest) -> TrainingLogResponse: ...
    @overload
    def __getitem__(self, req: ParityRequest) -> ParityResponse: ...
    def __getitem__(self, req: Request) -> Response:
        return self._data[req]

    @overload
    def get(self, req: GenerateRequest) -> GenerateResponse | None: ...
    @overload
    def get(self, req: LoglikelihoodRequest) -> LoglikelihoodResponse | None: ...
    @overload
    def get(self, req: RollingLoglikelihoodRequest) -> RollingLoglikelihoodResponse | None: ...
    @overload
    def get(self, req: ProbeRequest) -> ProbeResponse | None: ...
    @overload
    def get(self, req: WeightsRequest) -> WeightsResponse | None: ...
    @overload
    def get(self, req: TrainingLogRequest) -> TrainingLogResponse | None: ...
    @overload
    def get(self, req: ParityRequest) -> ParityResponse | None: ...
    def get(self, req: Request) -> Response | None:
        return self._data.get(req)

    def __contains__(self, req: object) -> bool:
        return req in self._data

    def __len__(self) -> int:
        return len(self._data)

    def set(self, req: Request, resp: Response) -> None:
        expected = _RESPONSE_OF[type(req)]
        if not isinstance(resp, expected):
            raise TypeError(f"{type(req).__name__} answered with {type(resp).__name__}")
        self._data[req] = resp

    def update(self, other: Responses) -> None:
        self._data.update(other._data)

    def items(self) -> list[tuple[Request, Response]]:
        return list(self._data.items())


_RESPONSE_OF: dict[type, type] = {
    GenerateRequest: GenerateResponse,
    LoglikelihoodRequest: LoglikelihoodResponse,
    RollingLoglikelihoodRequest: RollingLoglikelihoodResponse,
    ProbeRequest: ProbeResponse,
    WeightsRequest: WeightsResponse,
    TrainingLogRequest: TrainingLogResponse,
    ParityRequest: ParityResponse,
}
