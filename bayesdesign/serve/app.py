"""The HTTP API of a live experiment (FastAPI). The contract is in ``docs/serve.md``; the OpenAPI
page is served at ``/docs``.

Every endpoint but ``/health`` (and the API description at ``/docs``, ``/openapi.json``) needs
``Authorization: Bearer <key>``. Bad input gets 422 with FastAPI's body ``{"detail": [{"loc",
"msg", "type"}]}`` where ``loc`` names the field (``["body", "x", "age"]``); a request body over
64 KiB gets 422 with ``loc`` ``["body"]``. Requests are validated before anything is written, so a
bad request never changes the log.
"""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from .. import __version__
from .auth import KeyRing
from .core import COVARIATE_PATTERN, NAME_PATTERN, Conflict, Core, InputError, NotFound

__all__ = ["create_app", "MAX_BODY"]

MAX_BODY = 64 * 1024

Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
ExperimentName = Annotated[str, Field(pattern=NAME_PATTERN, description="[A-Za-z0-9_-]{1,64}")]
UnitId = Annotated[str, Field(strict=True, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$",
                              description="1 to 128 characters, no control characters")]
PathName = Annotated[str, Path(pattern=NAME_PATTERN, description="experiment name, [A-Za-z0-9_-]{1,64}")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CovariateIn(_Body):
    name: Annotated[str, Field(pattern=COVARIATE_PATTERN)]
    low: Finite
    high: Finite


class ExperimentIn(_Body):
    name: ExperimentName
    design: Annotated[str, Field(min_length=1, max_length=1000, description="any design name the runner accepts")]
    covariates: Annotated[list[CovariateIn], Field(min_length=1, max_length=256)]
    batch_size: Annotated[int, Field(strict=True, ge=1, description="refit every this many outcomes")] = 1
    horizon: Annotated[int, Field(strict=True, ge=10, description="planned units: the design's horizon and "
                                                                   "the confidence sequence's tuning point")] = 2000
    seed: Annotated[int | None, Field(strict=True, ge=0, lt=2**63, description="seed of the coin (random if "
                                                                               "omitted; always recorded)")] = None


class CovariateOut(BaseModel):
    name: str
    low: float
    high: float


class ExperimentOut(BaseModel):
    name: str
    design: str
    covariates: list[CovariateOut]
    batch_size: int
    horizon: int
    seed: int


class AssignIn(_Body):
    unit_id: UnitId
    x: dict[str, Finite]


class AssignOut(BaseModel):
    unit_id: str
    arm: Literal[0, 1]
    propensity: float
    policy_version: int


class OutcomeIn(_Body):
    unit_id: UnitId
    y: Finite
    arm: Annotated[int | None, Field(strict=True, ge=0, le=1, description="optional check: the arm applied")] = None


class OutcomeOut(BaseModel):
    unit_id: str
    y: float
    recorded: bool = Field(description="false when this outcome was already logged (an idempotent retry)")


class AnalysisOut(BaseModel):
    units: int
    outcomes: int
    ate: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    cs_low: float | None
    cs_high: float | None
    level: float
    cs_horizon: int
    message: str | None = None
    warnings: list[str] = []


class Health(BaseModel):
    status: str
    version: str


class _BodyLimit:
    """Refuse request bodies over ``limit`` bytes (422 naming ``body``) before they reach the app."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._refuse(scope, receive, send)
        done = False

        async def replay():
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        detail = [{"loc": ["body"], "msg": f"request body over {self.limit} bytes", "type": "too_large"}]
        await JSONResponse({"detail": detail}, status_code=422)(scope, receive, send)


def create_app(db: str, keys: list[str] | None, sqlite_sync: str = "full") -> FastAPI:
    """The service over database ``db``; ``keys=None`` serves without authentication."""
    core = Core(db, sqlite_sync)
    ring = None if keys is None else KeyRing(keys)
    if ring is not None and not len(ring):
        raise ValueError("api keys: none given")
    bearer = HTTPBearer(auto_error=False)

    def require_key(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if ring is None:
            return
        if creds is None or creds.scheme.lower() != "bearer" or not ring.accepts(creds.credentials):
            raise HTTPException(401, "missing or invalid API key (send Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(
        title="bayesdesign live experiment",
        version=__version__,
        description="Adaptive assignment with a durable log, delayed outcomes and anytime-valid inference.",
    )
    app.state.core = core

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, e: RequestValidationError):
        # FastAPI's body without the offending input (it may be NaN, which JSON cannot carry)
        detail = [{"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in e.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(InputError)
    async def _input(_request: Request, e: InputError):
        return JSONResponse({"detail": [{"loc": list(e.loc), "msg": e.msg, "type": "value_error"}]}, status_code=422)

    @app.exception_handler(NotFound)
    async def _missing(_request: Request, e: NotFound):
        return JSONResponse({"detail": str(e)}, status_code=404)

    @app.exception_handler(Conflict)
    async def _conflict(_request: Request, e: Conflict):
        return JSONResponse({"detail": str(e), "field": e.field}, status_code=409)

    @app.get("/health", response_model=Health)
    def health():
        return {"status": "ok", "version": __version__}

    api = APIRouter(dependencies=[Depends(require_key)])

    @api.post("/experiments", status_code=201, response_model=ExperimentOut)
    def create_experiment(body: ExperimentIn):
        d = core.create(body.name, body.design, [c.model_dump() for c in body.covariates], body.batch_size,
                        body.horizon, body.seed)
        return d.public()

    @api.get("/experiments/{name}", response_model=ExperimentOut)
    def get_experiment(name: PathName):
        return core.definition(name).public()

    @api.post("/experiments/{name}/assign", response_model=AssignOut)
    def assign(name: PathName, body: AssignIn):
        a = core.assign(name, body.unit_id, body.x)
        return {"unit_id": a.unit_id, "arm": a.arm, "propensity": a.propensity, "policy_version": a.policy_version}

    @api.post("/experiments/{name}/outcomes", response_model=OutcomeOut)
    def outcome(name: PathName, body: OutcomeIn):
        return core.record(name, body.unit_id, body.y, body.arm)

    @api.get("/experiments/{name}/analysis", response_model=AnalysisOut)
    async def analysis(name: PathName):
        return await run_in_threadpool(core.analysis, name)

    @api.get("/experiments/{name}/log.csv", response_class=PlainTextResponse)
    def log_csv(name: PathName):
        return PlainTextResponse(core.log_csv(name), media_type="text/csv")

    app.include_router(api)
    app.add_middleware(_BodyLimit)
    return app
