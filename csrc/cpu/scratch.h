// Per-thread scratch buffers for the CPU kernels: thread_local, grown as needed and never shrunk,
// so that a kernel called every ascent step allocates nothing after the first. One buffer per
// (T, Slot) and thread, shared by every kernel; a kernel must not hold a slot across a call into
// another kernel that uses the same slot (none does: the kernels do not call each other while
// holding one).
#pragma once

#include <cstddef>
#include <vector>

namespace pydevis::cpu {

template <typename T, int Slot = 0>
std::vector<T>& thread_scratch(size_t n) {
  thread_local std::vector<T> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

}  // namespace pydevis::cpu
