"""``pydevis serve MODEL``: an interactive explorer in the browser (optional extra ``serve``).

:mod:`.state` holds the model and the caches (photos, activation grids, projections),
:mod:`.gallery` the ``--images`` folder (top-9), :mod:`.jobs` the activation-maximization runs
with their progress, :mod:`.app` the JSON API and the page (``static/index.html``).
"""

from __future__ import annotations

from ..errors import PydevisError

#: the packages of the ``serve`` extra, by import name
EXTRA = ("starlette", "uvicorn", "multipart")


def require() -> None:
    """Refuse, with how to install them, when the ``serve`` extra's packages are missing."""
    import importlib.util

    missing = [m for m in EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        names = ", ".join("python-multipart" if m == "multipart" else m for m in missing)
        raise PydevisError(f"pydevis serve needs the 'serve' extra ({names} missing): "
                           "pip install 'pydevis[serve]' (or pip install '.[serve]' in the "
                           "source tree)")
