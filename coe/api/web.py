"""The web chat page: ``GET /`` and its static assets, plain files shipped in ``coe/api/static``.

The page needs no auth (it holds no data); the API calls it makes do. No build step and nothing
fetched from elsewhere: deployments are offline.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).with_name("static")
#: the assets served under ``/static/``, by name: nothing else in the folder is reachable
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
#: revalidate on every load, so a new coe version is picked up at once
HEADERS = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/static/{name}")
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, f"No asset named {name!r}.")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=HEADERS)
