"""The HTTP service behind ``medfuse serve``: app factory, micro-batcher, limits, bearer token, log redaction.

docs/serving.md describes the endpoints, limits and batching. Records are validated by pydantic straight from
the request bytes (``PatientRecord``: no NaN or infinity, JSON nested at most 200 deep), checked against the
``[serve]`` limits, then queued; one worker collects concurrent requests into a batch and runs the
(synchronous, not thread-safe) predictor on its single thread. Logs name routes, statuses and timings only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medfuse.config import ServeConfig
from medfuse.serving.records import STRICT_NUMBERS, PatientRecord

log = logging.getLogger("medfuse.serve")
access_log = logging.getLogger("medfuse.serve.access")

TOKEN_ENV = "MEDFUSE_API_TOKEN"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
ROUTES = OPEN_PATHS | {"/v1/predict", "/v1/model", "/v1/stats"}
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_ERRORS = 20  # validation errors returned per response
WARM_UP = PatientRecord(id="warm-up", labs=[], note="Chief Complaint:\nchest pain\n\nHistory of Present Illness:\n"
                        "chest pain since this morning.\n")  # predicted once before /readyz says ready


class PredictRequest(BaseModel):
    """The body of ``POST /v1/predict``: one record (``record``) or a batch (``records``)."""

    model_config = ConfigDict(extra="forbid")

    record: PatientRecord | None = None
    records: list[PatientRecord] | None = Field(None, min_length=1)
    explain: bool = Field(False, description="Add per-label explanations (slower).")

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.record is None) == (self.records is None):
            raise ValueError("give either 'record' (one) or 'records' (a list)")
        return self


def bind_error(host: str, token: str | None, allow_insecure: bool) -> str | None:
    """Why ``host`` may not be bound (a non-loopback address without a token or ``--allow-insecure``), or None."""
    if token or allow_insecure or host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (f"refusing to serve on {host} without a token: set {TOKEN_ENV} (and put TLS in front), "
            "or pass --allow-insecure")


class Busy(Exception):
    """The queue is full or the service is stopping."""


class PredictionFailed(Exception):
    """The predictor raised; the message is the exception's type only."""


@dataclass
class _Job:
    records: list[PatientRecord]
    explain: bool
    future: asyncio.Future


class MicroBatcher:
    """Collects concurrent requests into one ``predict`` call on a single worker thread.

    A batch takes the waiting requests, oldest first, up to ``max_batch`` records; a request is never split,
    so a batch exceeds ``max_batch`` only when one request does. When requests arrived while the previous
    batch ran (concurrent clients), the batch first waits up to ``max_wait_ms`` for more, so that clients
    whose answers just went out join it; a lone client never waits. Explained and plain requests run as
    separate calls. When a batched call fails, each request is retried alone so that one bad record fails
    only its own request.
    """

    def __init__(self, predict: Callable[[list[PatientRecord], bool], list[dict]], executor: ThreadPoolExecutor,
                 max_batch: int, max_wait_ms: float, max_queue: int):
        self._predict, self._executor = predict, executor
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000, max_queue
        self._jobs: deque[_Job] = deque()
        self._queued_records = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self.stats = {"requests": 0, "records": 0, "batches": 0, "largest_batch": 0, "failed": 0, "busy": 0}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    @property
    def queued(self) -> int:
        return len(self._jobs)

    async def submit(self, records: list[PatientRecord], explain: bool) -> list[dict]:
        """Queue one request and wait for its results (one dict per record, same order)."""
        if self._closing or len(self._jobs) >= self.max_queue:
            self.stats["busy"] += 1
            raise Busy
        job = _Job(records, explain, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._queued_records += len(records)
        self._wake.set()
        return await job.future

    async def close(self) -> None:
        """Finish every queued request, then stop the worker."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while batch := await self._collect():
            await self._predict_batch(batch)

    async def _collect(self) -> list[_Job]:
        concurrent = bool(self._jobs)  # requests came in while the last batch ran: more are likely on their way
        while not self._jobs:
            if self._closing:
                return []
            self._wake.clear()
            await self._wake.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while concurrent and self._queued_records < self.max_batch and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                break
        batch, size = [], 0
        while self._jobs and (not batch or size + len(self._jobs[0].records) <= self.max_batch):
            job = self._jobs.popleft()
            batch.append(job)
            size += len(job.records)
        self._queued_records -= size
        return batch

    async def _predict_batch(self, batch: list[_Job]) -> None:
        for explain in (False, True):
            jobs = [j for j in batch if j.explain is explain and not j.future.done()]  # done: client went away
            if jobs:
                await self._call(jobs, explain)

    async def _call(self, jobs: list[_Job], explain: bool) -> None:
        records = [r for j in jobs for r in j.records]
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, records, explain)
            if len(results) != len(records):
                raise RuntimeError(f"the predictor returned {len(results)} results for {len(records)} records")
        except Exception as e:
            if len(jobs) > 1:
                for job in jobs:
                    await self._call([job], explain)
                return
            self.stats["failed"] += 1
            log.error("prediction failed", exc_info=e)
            if not jobs[0].future.done():
                jobs[0].future.set_exception(PredictionFailed(type(e).__name__))
            return
        self.stats["requests"] += len(jobs)
        self.stats["records"] += len(records)
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(records))
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(results[start:start + len(job.records)])
            start += len(job.records)


class _TooLarge(Exception):
    pass


async def _send_json(send: Callable, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class _Gate:
    """Pure ASGI middleware in front of the app: the bearer token, the body size (Content-Length, then the bytes
    as they are read, before any JSON parsing) and a one-line access log (method, route, status, milliseconds;
    never a query string, a header or the body)."""

    def __init__(self, app: Callable, max_body_bytes: int, token: str | None):
        self.app, self.max_body = app, max_body_bytes
        self.token = token.encode() if token else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0

        async def send_seen(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_seen)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            route = scope["path"] if scope["path"] in ROUTES else "<other>"
            access_log.info("%s %s %d %.1f ms", method, route, status, 1000 * (time.perf_counter() - started))

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        value = next((v for k, v in headers if k == b"authorization"), b"")
        scheme, _, given = value.partition(b" ")
        return scheme.lower() == b"bearer" and secrets.compare_digest(given.strip(), self.token)

    async def _handle(self, scope: dict, receive: Callable, send: Callable) -> None:
        if self.token and scope["path"] not in OPEN_PATHS and not self._authorized(scope["headers"]):
            await _send_json(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _send_json(send, 413, f"the request body is over {self.max_body} bytes")
            return
        received = 0

        async def receive_counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise _TooLarge
            return message

        try:
            await self.app(scope, receive_counted, send)
        except _TooLarge:  # uvicorn reads and drops the rest of the body, so the client gets the answer
            await _send_json(send, 413, f"the request body is over {self.max_body} bytes")


@dataclass
class _State:
    status: str = "loading"  # loading | ready | failed | stopping
    error: str = ""
    version: str = ""
    card: dict = field(default_factory=dict)
    batcher: MicroBatcher | None = None


def _error(status: int, detail: Any, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status, headers=headers)


def _validation_errors(e: ValidationError) -> list[dict]:
    """pydantic's errors with the field path under ``body``, without the offending input (never echoed)."""
    errors = [{"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]} for err in e.errors()]
    if len(errors) > MAX_ERRORS:
        errors = errors[:MAX_ERRORS] + [{"loc": ["body"], "msg": f"and {len(errors) - MAX_ERRORS} more errors",
                                         "type": "too_many_errors"}]
    return errors


def _over_limit(records: list[PatientRecord], cfg: ServeConfig) -> str | None:
    if len(records) > cfg.max_records:
        return f"{len(records)} records in one request; the limit is {cfg.max_records}"
    for i, r in enumerate(records):
        if len(r.labs) > cfg.max_labs:
            return f"record {i}: {len(r.labs)} lab results; the limit is {cfg.max_labs}"
        notes = [r.note] if isinstance(r.note, str) else list(r.note or [])
        notes += r.sections.model_dump().values() if r.sections else []
        chars = sum(len(s or "") for s in notes)
        if chars > cfg.max_note_chars:
            return f"record {i}: {chars} characters of note text; the limit is {cfg.max_note_chars}"
    return None


PREDICT_BODY = {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/PredictRequest"},
    "example": {"records": [{"id": "adm-1", "admittime": "2150-01-01T08:00:00",
                             "labs": [{"test": 50912, "value": 2.4, "unit": "mg/dL"}],
                             "note": "Chief Complaint:\nshortness of breath\n"}], "explain": False}}}}
ERRORS = {401: {"description": "no or wrong bearer token (when MEDFUSE_API_TOKEN is set)"},
          413: {"description": "over a [serve] limit: body size, records, labs per record or note length"},
          415: {"description": "the body is not application/json"},
          422: {"description": "invalid JSON or record; `detail` gives each field path"},
          503: {"description": "the model is loading, or the queue is full"}}


def create_app(load: Callable[[], Any], cfg: ServeConfig, token: str | None = None,
               on_load_error: Callable[[], None] | None = None) -> FastAPI:
    """The FastAPI app. ``load()`` returns a predictor (``medfuse.serving.predict.Predictor``'s interface); it runs
    on the worker thread after start-up, so ``/healthz`` answers at once and ``/readyz`` once it has returned and
    made one warm-up prediction."""
    state = _State()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        executor = ThreadPoolExecutor(1, thread_name_prefix="medfuse-predict")
        loading = asyncio.create_task(_load(executor))
        try:
            yield
        finally:
            await loading
            state.status = "stopping" if state.status == "ready" else state.status
            if state.batcher is not None:
                await state.batcher.close()
            executor.shutdown()
            log.info("stopped")

    async def _load(executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        try:
            predictor = await loop.run_in_executor(executor, load)
            state.card = jsonable_encoder(await loop.run_in_executor(executor, predictor.card))
            await loop.run_in_executor(executor, predictor.predict, [WARM_UP], False)  # first calls are slow
        except Exception as e:
            state.status, state.error = "failed", f"{type(e).__name__}: {e}"
            log.error("the model failed to load: %s", state.error, exc_info=e)
            if on_load_error is not None:
                on_load_error()
            return
        state.version = predictor.version
        state.batcher = MicroBatcher(predictor.predict, executor, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue)
        state.batcher.start()
        state.status = "ready"
        log.info("model %s ready: %d labels", state.version, len(predictor.label_names))

    app = FastAPI(title="medfuse", version="1", lifespan=lifespan, redoc_url=None,
                  description="Disease probabilities from an admission's lab tests and clinical note (MEDFuse).")
    app.state.service = state

    def not_ready() -> JSONResponse:
        return _error(503, f"the model is not ready ({state.status})", {"Retry-After": "1"})

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the model is loaded", responses={503: ERRORS[503]})
    async def readyz() -> JSONResponse:
        if state.status != "ready":
            return JSONResponse({"ready": False, "status": state.status}, 503)
        return JSONResponse({"ready": True, "model_version": state.version})

    @app.get("/v1/model", summary="The model card", responses={401: ERRORS[401], 503: ERRORS[503]})
    async def model_card() -> JSONResponse:
        return JSONResponse(state.card) if state.status == "ready" else not_ready()

    @app.get("/v1/stats", summary="Micro-batching counters", responses={401: ERRORS[401]})
    async def stats() -> dict:
        batcher = state.batcher
        counts = dict(batcher.stats, queued=batcher.queued) if batcher else {}
        return {"status": state.status, "model_version": state.version, "max_batch": cfg.max_batch,
                "max_wait_ms": cfg.max_wait_ms, **counts}

    @app.post("/v1/predict", summary="Disease probabilities for one record or a batch",
              openapi_extra={"requestBody": PREDICT_BODY}, responses=ERRORS)
    async def predict(request: Request) -> JSONResponse:
        if state.status != "ready":
            return not_ready()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _error(415, "Content-Type must be application/json")
        try:
            body = PredictRequest.model_validate_json(await request.body(), context=STRICT_NUMBERS)
        except ValidationError as e:
            return _error(422, _validation_errors(e))
        records = body.records if body.records is not None else [body.record]
        if problem := _over_limit(records, cfg):
            return _error(413, problem)
        try:
            results = await state.batcher.submit(records, body.explain)
        except Busy:
            return _error(503, "the service is busy; retry", {"Retry-After": "1"})
        except PredictionFailed:
            return _error(500, "the prediction failed")
        key, value = ("predictions", results) if body.records is not None else ("prediction", results[0])
        return JSONResponse(jsonable_encoder({"model_version": state.version, key: value}))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        return _error(500, "internal error")

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            body = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(body.pop("$defs"), PredictRequest=body)
            if token:
                components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                for path, operations in schema["paths"].items():
                    for operation in operations.values():
                        operation["security"] = [] if path in OPEN_PATHS else [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    app.add_middleware(_Gate, max_body_bytes=cfg.max_body_bytes, token=token)
    return app


class RedactExceptions(logging.Filter):
    """Exception messages can quote a record's values: a logged exception keeps its type and where it was
    raised, never its message or traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            frames = traceback.extract_tb(e.__traceback__)
            where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
            record.msg, record.args = f"{record.getMessage()} ({type(e).__name__}{where})", None
            record.exc_info = record.exc_text = None
        return True


def configure_logging() -> None:
    """One stderr handler with :class:`RedactExceptions`; medfuse and uvicorn at INFO, everything else WARNING."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactExceptions())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("medfuse", "uvicorn"):
        logging.getLogger(name).setLevel(logging.INFO)


def serve(bundle_dir: str | Path, cfg: ServeConfig, token: str | None) -> int:
    """Serve ``bundle_dir`` until SIGINT or SIGTERM (in-flight requests finish); 1 when the model failed to load."""
    import uvicorn

    from medfuse.serving.predict import Predictor

    configure_logging()  # no embedding cache: nothing derived from a record is written to disk
    app = create_app(lambda: Predictor.load(bundle_dir, cfg.device, cache_dir=False, memory_cache=cfg.line_cache), cfg, token,
                     on_load_error=lambda: setattr(server, "should_exit", True))
    server = uvicorn.Server(uvicorn.Config(
        app, host=cfg.host, port=cfg.port, log_config=None, access_log=False, server_header=False,
        timeout_graceful_shutdown=cfg.shutdown_timeout))
    server.run()
    return 1 if app.state.service.error else 0
