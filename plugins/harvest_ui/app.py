"""The gallery's FastAPI app: one HTML page, a JSON API over the state DB, thumbnails, a trigger.

Paths are relative, so the same app works on its own (``uvicorn``) and mounted under ``/harvest`` in
the Airflow API server. Inside Airflow every route requires a logged-in Airflow user who may read the
runs of the harvest DAG (harvest_ui.access).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from harvest_ui.dag_trigger import RethresholdRequest, TriggerError, trigger_dag_run
from harvest_ui.gallery import (
    COLLAPSED,
    SCORED,
    STATUSES,
    Item,
    ItemCache,
    domain_stats,
    filter_items,
    list_runs,
    load_item,
    one_card_per_image,
    status_counts,
)
from harvest_ui.settings import THUMBNAIL_SIZE, GallerySettings, load_settings
from harvest_ui.thumbnails import ThumbnailError, ensure_thumbnail

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Airflow's session cookie; forwarded as a bearer token when the gallery triggers a DAG run.
AIRFLOW_TOKEN_COOKIE = "_token"
MAX_PAGE = 1000
#: Items a page of the grid shows by default: each brings a thumbnail request.
PAGE = 48
#: Thumbnails are per user (only users who may read the harvest DAG get them): browsers keep them an
#: hour, shared caches not at all.
THUMBNAIL_CACHE = "private, max-age=3600"


class RethresholdBody(BaseModel):
    threshold: float = Field(ge=0.0, le=1.0)
    run_id: str | None = None
    labels: list[str] = Field(default_factory=list)


def current_settings(request: Request) -> GallerySettings:
    """Resolved on first use: inside Airflow the connections are readable only once it is up."""
    state = request.app.state
    if state.gallery_settings is None:
        state.gallery_settings = load_settings()
    return state.gallery_settings


Settings = Annotated[GallerySettings, Depends(current_settings)]


def _statuses(status: str | None) -> list[str]:
    wanted = [s for s in (status or "").split(",") if s]
    unknown = [s for s in wanted if s not in STATUSES]
    if unknown:
        raise HTTPException(422, f"unknown status {unknown}; use any of {list(STATUSES)}")
    return wanted


def create_app(
    settings: GallerySettings | None = None,
    *,
    dependencies: Sequence[Callable[..., Any]] = (),
) -> FastAPI:
    """``dependencies`` guard every route (the plugin passes Airflow's user check).

    Long because every route is declared here, as a closure over this app's item cache: each app
    (the plugin's, and one per test) keeps its own cache, and the routes read best side by side."""
    app = FastAPI(
        title="Harvest gallery",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served outside the route dependencies, so it would skip the login
        dependencies=[Depends(d) for d in dependencies],
    )
    app.state.gallery_settings = settings

    cache = ItemCache()

    def items_for(cfg: GallerySettings, run: str | None) -> list[Item]:
        return cache.get(cfg.database_url, cfg.models_dir, run)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC_DIR / "gallery.html").read_text(encoding="utf-8"))

    @app.get("/api/runs")
    def runs(cfg: Settings) -> dict:
        return {"runs": list_runs(cfg.database_url), "rethreshold_dag": cfg.rethreshold_dag}

    # The list endpoints return JSONResponse directly: FastAPI's generic encoder is far slower on the
    # tens of thousands of plain dicts a large run produces (bench/README.md).
    @app.get("/api/items")
    def items(
        cfg: Settings,
        run: str | None = None,
        label: str | None = None,
        domain: str | None = None,
        status: str | None = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = PAGE,
    ) -> JSONResponse:
        wanted = _statuses(status)
        everything = items_for(cfg, run)
        scoped = one_card_per_image(filter_items(everything, label=label, domain=domain))
        # skipped and failed candidates are counts unless asked for by status
        shown = wanted or [s for s in STATUSES if s not in COLLAPSED]
        selected = filter_items(scoped, statuses=shown)
        counts = status_counts(scoped)
        return JSONResponse(
            {
                "total": len(selected),
                "offset": offset,
                "counts": counts,
                "collapsed": {} if wanted else {s: counts[s] for s in COLLAPSED if counts[s]},
                "labels": sorted({i.label for i in everything if i.label}),
                "domains": sorted({i.domain for i in everything}),
                "items": [i.as_dict() for i in selected[offset : offset + limit]],
            }
        )

    @app.get("/api/scores")
    def scores(
        cfg: Settings, run: str | None = None, label: str | None = None, domain: str | None = None
    ) -> JSONResponse:
        """Scores of every decided image in the selection, for the threshold slider to count over."""
        scoped = filter_items(items_for(cfg, run), label=label, domain=domain, statuses=SCORED)
        thresholds = sorted({i.threshold for i in scoped if i.threshold is not None})
        return JSONResponse(
            {
                "thresholds": thresholds,
                "scores": [
                    {"id": i.id, "score": i.score, "label": i.label, "status": i.status} for i in scoped
                ],
            }
        )

    @app.get("/api/items/{item_id}")
    def item(cfg: Settings, item_id: int) -> dict:
        found = load_item(cfg.database_url, cfg.models_dir, item_id)
        if found is None:
            raise HTTPException(404, f"no candidate with id {item_id}")
        return found.as_dict()

    @app.get("/api/stats")
    def stats(cfg: Settings, run: str | None = None, label: str | None = None) -> JSONResponse:
        return JSONResponse({"domains": domain_stats(filter_items(items_for(cfg, run), label=label))})

    @app.get("/thumbnails/{sha256}.jpg", include_in_schema=False)
    async def thumbnail(cfg: Settings, sha256: str) -> FileResponse:
        """The image's thumbnail; 404 with the reason when there is none (no bytes, or too costly
        to decode: see harvest_ui.thumbnails)."""
        try:
            path = await run_in_threadpool(
                ensure_thumbnail,
                cfg.database_url,
                cfg.thumbnails_dir,
                sha256,
                THUMBNAIL_SIZE,
                cfg.s3,
                cfg.preview_mb,
            )
        except ThumbnailError as exc:
            raise HTTPException(404, str(exc)) from exc
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": THUMBNAIL_CACHE})

    @app.post("/api/rethreshold")
    def rethreshold(cfg: Settings, body: RethresholdBody, request: Request) -> dict:
        token = _bearer(request) or request.cookies.get(AIRFLOW_TOKEN_COOKIE)
        api_url = cfg.airflow_api_url or _own_server(request)
        wanted = RethresholdRequest(body.threshold, body.run_id or None, tuple(body.labels))
        try:
            return trigger_dag_run(api_url, cfg.rethreshold_dag, wanted, token)
        except TriggerError as exc:
            raise HTTPException(exc.status, str(exc)) from exc

    # the page's own script and style sheet; mounted, so served without the login (they hold no data)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _own_server(request: Request) -> str:
    """The API server this app is mounted in, from the socket it listens on (never the Host header,
    which the client chooses)."""
    host, port = request.scope.get("server") or ("127.0.0.1", 8080)
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    host = f"[{host}]" if ":" in host else host
    return f"{request.url.scheme}://{host}:{port}"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
