"""``pydevis serve``: the interactive explorer in the browser (:mod:`pydevis.serve`)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from ..errors import PydevisError
from .app import BgrOpt, LabelsOpt, MeanOpt, SizeOpt, StdOpt, app, load_model


@app.command("serve")
def serve(model: Annotated[str, typer.Argument(metavar="MODEL",
                                               help="Path to an .onnx image classifier.")],
          images: Annotated[str | None, typer.Option(
              "--images", metavar="DIR",
              help="A folder of photos: offered on the page, and the set top-9 searches "
                   "(its first 256 image files by name).  [default: none]")] = None,
          host: Annotated[str, typer.Option(
              "--host", metavar="ADDR",
              help="Address to listen on; anything but a loopback address exposes the explorer "
                   "to the network.")] = "127.0.0.1",
          port: Annotated[int, typer.Option("--port", min=1, max=65535, metavar="N",
                                            help="TCP port.")] = 8765,
          scorer: Annotated[list[str] | None, typer.Option(
              "--scorer", metavar="MODEL",
              help="Another .onnx classifier to cross-score class images with (repeat it).  "
                   "[default: none]")] = None,
          size: SizeOpt = None, bgr: BgrOpt = False, mean: MeanOpt = None,
          std: StdOpt = None, labels: LabelsOpt = None,
          quiet: Annotated[bool, typer.Option(
              "--quiet", "-q", help="No startup line.")] = False):
    """Serve an interactive explorer of MODEL at http://HOST:PORT/: open or drop a photo, see
    its top-5 and every layer's activation maps, click a channel for its deconvnet and guided
    projections, its top-9 (with --images) and its activation-maximization image; class images
    with their cross-scores. The page uses the JSON API under /api/ (README). Needs the
    'serve' extra: pip install 'pydevis[serve]'.

    Example: pydevis serve ../shared/models/mobilenet_v2_1.0_224_qat.onnx
    --images ../shared/images
    """
    from ..serve import require

    require()
    import uvicorn

    from ..serve.app import make_app

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    _check_bind(host, port)  # one line, before the model is loaded
    application = make_app(model, images, scorer or (),
                           load=lambda p: load_model(p, size, bgr, mean, std, labels))
    if not quiet:
        shown = f"[{host}]" if ":" in host else host
        typer.echo(f"pydevis serve: {model} at http://{shown}:{port}/ (Ctrl-C stops)", err=True)
        if not loopback:
            typer.echo(f"warning: listening on {host}, not a loopback address: anyone who can "
                       "reach this machine can use the explorer", err=True)
    try:
        uvicorn.run(application, host=host, port=port, log_level="warning",
                    access_log=False, server_header=False)
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind
        raise PydevisError(f"cannot listen on {host}:{port} (in use, or not an address "
                           "of this machine?)") from exc


def _check_bind(host: str, port: int) -> None:
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
    except OSError as exc:
        raise PydevisError(f"cannot listen on {host}:{port}: "
                           f"{exc.strerror or exc}") from None
