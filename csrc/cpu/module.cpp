// pydevis._C: the CPU kernels of the backward path and of the ascent (semantics: docs/kernels.md).
//
// Files: bind.h (what they share; how every wrapper checks its arguments), bind_conv.cpp,
// bind_backward.cpp, bind_ascent.cpp, bind_pool.cpp; the kernels themselves are the other files of
// csrc/cpu/ and csrc/common/parallel.cpp (the thread pool).
#include "bind.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "pydevis CPU kernels (C++, own thread pool, OpenBLAS); see docs/kernels.md";
  bind_conv(m);
  bind_backward(m);
  bind_ascent(m);
  bind_pool(m);
  m.attr("has_openmp") =
#ifdef _OPENMP
      true;
#else
      false;
#endif
}

