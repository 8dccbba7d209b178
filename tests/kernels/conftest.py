"""The ``dev`` fixture of the CUDA tests (test_cuda_*.py): device arrays from cupy or numba.cuda.

Here rather than in cuda_common.py so that the tests take it as an argument without importing
it; cuda_common is imported only when a test asks for the fixture, as it skips (or, with
``PYDEVIS_REQUIRE_CUDA=1``, fails) where the CUDA backend is unavailable."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["cupy", "numba"])
def dev(request):
    from cuda_common import DeviceLib

    return DeviceLib(request.param)
