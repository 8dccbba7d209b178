"""The JSON API under ``/api/`` and the page (Starlette). Errors are JSON ``{"error": ...}``
with a 4xx status (5xx only for a bug, still JSON, never a traceback page)."""

from __future__ import annotations

import io
import json
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .. import kernels
from ..errors import PydevisError
from ..methods.ascent import METHODS
from ..outputs import finite
from .gallery import Gallery
from .jobs import MAX_STEPS, Busy, Jobs
from .state import NotFound, png_bytes

MAX_UPLOAD = 20 << 20  # bytes of one request body
MAX_JSON = 64 << 10


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _json(data, status: int = 200) -> JSONResponse:
    return JSONResponse(finite(data), status_code=status)


def _png(data: bytes, info: dict | None = None) -> Response:
    headers = {"Cache-Control": "no-store"}
    if info:
        headers["X-Pydevis-Info"] = json.dumps(finite(info), ensure_ascii=True)
    return Response(data, media_type="image/png", headers=headers)


def _arg(request: Request, name: str) -> str:
    v = request.query_params.get(name)
    if v is None:
        raise ApiError(400, f"missing query parameter {name!r}")
    return v


def _int(text, name: str, lo: int, hi: int) -> int:
    try:
        v = int(str(text).strip())
    except ValueError:
        raise ApiError(400, f"{name}: expected a whole number, got {str(text)[:40]!r}") from None
    if not lo <= v <= hi:
        raise ApiError(400, f"{name} must be in {lo}–{hi}")
    return v


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) beyond ``limit`` bytes before it is all read."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"request too large (over {limit >> 20} MB)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request too large (over {limit >> 20} MB)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _form(request: Request):
    body = await _body(request, MAX_UPLOAD)
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise ApiError(415, "expected a multipart/form-data body")
    return await Request(request.scope, replay).form(max_files=1, max_fields=16)


def build(explorer, gallery: Gallery | None, jobs: Jobs) -> Starlette:
    model = explorer.model

    async def page(request):
        html = resources.files("pydevis.serve").joinpath("static/index.html").read_text("utf-8")
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def info(request):
        return _json({"model": model.path.name, "size": list(model.spec.size),
                      "classes": model.num_classes, "labels": list(model.labels),
                      "backend": kernels.backend(), "scorers": list(jobs.scorers),
                      "images": gallery is not None, "methods": list(METHODS),
                      "max_steps": MAX_STEPS, "max_upload": MAX_UPLOAD})

    async def tensors(request):
        return _json({"tensors": [t.row() for t in explorer.tensors]})

    async def images(request):
        if gallery is None:
            raise ApiError(404, "the server was started without --images")
        return _json({"images": gallery.names})

    async def predict(request):
        form = await _form(request)
        up, name, index = form.get("image"), form.get("name"), form.get("index")
        source: io.BytesIO | Path
        if up is not None and not isinstance(up, str):
            data = await up.read()
            source, label = io.BytesIO(data), "upload"
        elif name is not None or index is not None:
            if gallery is None:
                raise ApiError(400, "no --images folder: upload an image")
            i = None if index is None else _int(index, "index", 0, 1 << 30)
            source = gallery.path(None if i is not None else str(name), i)
            label = source.name
        else:
            raise ApiError(400, "send the photo as multipart field 'image' (or 'name' of an "
                                "--images entry)")
        k = _int(form.get("k", 5), "k", 1, 100)
        photo = await run_in_threadpool(explorer.add_photo, source, label)
        return _json({"photo": photo.id, "name": photo.name, "top": explorer.top(photo, k)})

    async def photo_png(request):
        p = explorer.photo(_arg(request, "photo"))
        return _png(await run_in_threadpool(png_bytes, p.pixels))

    async def activations(request):
        p = explorer.photo(_arg(request, "photo"))
        return _json(await run_in_threadpool(explorer.activations, p, _arg(request, "tensor")))

    async def project(request):
        if request.method == "POST":
            form = await _form(request)
            up = form.get("image")
            if up is None or isinstance(up, str):
                raise ApiError(400, "send the photo as multipart field 'image'")
            p = await run_in_threadpool(explorer.add_photo, io.BytesIO(await up.read()),
                                        "upload")
            unit, mode, size = form.get("unit"), form.get("mode", "deconvnet"), \
                form.get("size", 224)
        else:
            p = explorer.photo(_arg(request, "photo"))
            unit, mode = _arg(request, "unit"), request.query_params.get("mode", "deconvnet")
            size = request.query_params.get("size", 224)
        if not unit:
            raise ApiError(400, "missing 'unit' (TENSOR:CHANNEL[@Y,X])")
        png, meta = await run_in_threadpool(explorer.project, p, str(unit), str(mode),
                                            _int(size, "size", 32, 448))
        return _png(png, {**meta, "photo": p.id})

    async def top9(request):
        if gallery is None:
            raise ApiError(404, "top-9 needs the server started with --images DIR")
        ch = _int(_arg(request, "channel"), "channel", 0, 1 << 20)
        png, meta = await run_in_threadpool(gallery.top9, _arg(request, "tensor"), ch,
                                            request.query_params.get("mode", "deconvnet"))
        return _png(png, meta)

    async def visualize(request):
        try:
            body = json.loads(await _body(request, MAX_JSON) or b"{}")
        except ValueError:
            raise ApiError(400, "expected a JSON body") from None
        if not isinstance(body, dict):
            raise ApiError(400, "expected a JSON object")
        steps, preset = body.get("steps"), body.get("preset")
        job = jobs.submit(
            cls=body.get("class"), unit=body.get("unit"),
            method=str(body.get("method", "yosinski")),
            preset=None if preset in (None, "") else _int(preset, "preset", 1, 4),
            steps=None if steps in (None, "") else _int(steps, "steps", 1, MAX_STEPS),
            seed=_int(body.get("seed", 0), "seed", 0, 2**31 - 1))
        return _json(job.view(), 202 if job.state != "done" else 200)

    async def job(request):
        return _json(jobs.get(request.path_params["job"]).view())

    async def error(request, exc):
        if isinstance(exc, ApiError):
            status = exc.status
        elif isinstance(exc, HTTPException):
            status = exc.status_code
            msg = {404: "no such page or API route", 405: "method not allowed"}.get(
                status, str(exc.detail))
            return _json({"error": msg}, status)
        elif isinstance(exc, Busy):
            status = 429
        elif isinstance(exc, NotFound):
            status = 404
        elif isinstance(exc, (PydevisError, ValueError)):
            status = 400
        else:
            return _json({"error": f"internal error ({type(exc).__name__})"}, 500)
        return _json({"error": str(exc)}, status)

    async def favicon(request):
        return Response(status_code=204)

    routes = [Route("/", page), Route("/favicon.ico", favicon), Route("/api/model", info),
              Route("/api/tensors", tensors),
              Route("/api/images", images), Route("/api/predict", predict, methods=["POST"]),
              Route("/api/photo", photo_png), Route("/api/activations", activations),
              Route("/api/project", project, methods=["GET", "POST"]),
              Route("/api/top9", top9),
              Route("/api/visualize", visualize, methods=["POST"]),
              Route("/api/visualize/{job}", job)]
    handlers = {Exception: error, HTTPException: error, ApiError: error,
                PydevisError: error, ValueError: error}
    return Starlette(routes=routes, exception_handlers=handlers)


def make_app(model_path: str, images: str | None = None, scorers=(), threads: int | None = None,
             load=None):
    """The app for ``pydevis serve``: ``load(path)`` loads a model (the CLI passes one with
    its preprocessing flags); the ascent runs get their own copy of the model."""
    from .. import load as plain_load
    from .state import Explorer

    load = load or (lambda p: plain_load(p, threads=threads))
    explorer = Explorer(load(model_path))
    gallery = Gallery(explorer, images) if images else None
    scored = {}
    for s in scorers:
        m = plain_load(s, threads=threads)
        scored[m.path.stem if m.path.stem not in scored else str(m.path)] = m
    jobs = Jobs(explorer, lambda: load(model_path), scored)
    return build(explorer, gallery, jobs)
