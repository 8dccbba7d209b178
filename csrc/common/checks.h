// Argument checks shared by the C++ and CUDA wrappers.
//
// Every wrapper validates its arguments with these macros *before* touching memory. A failed check
// throws std::invalid_argument with a one-line message that names the argument; pybind11 maps it to
// ValueError.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace pydevis {

// Builds a message from any streamable pieces: concat("x: ", 3, " != ", 4).
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << '(';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << (s.size() == 1 ? ",)" : ")");
  return os.str();
}

}  // namespace pydevis

// CHECK(cond, pieces...): throw std::invalid_argument(concat(pieces...)) unless cond holds.
#define PYDEVIS_CHECK(cond, ...)                                      \
  do {                                                                \
    if (!(cond)) throw std::invalid_argument(::pydevis::concat(__VA_ARGS__)); \
  } while (0)

#ifndef CHECK
#define CHECK(cond, ...) PYDEVIS_CHECK(cond, __VA_ARGS__)
#endif

// CHECK_LEN(vec, n, name): a tuple argument has exactly n entries.
#define CHECK_LEN(vec, n, name)                                                          \
  PYDEVIS_CHECK((vec).size() == static_cast<size_t>(n), name, ": expected ", (n),        \
                " integers, got ", (vec).size())

// CHECK_ALL_GE(vec, lo, name): every entry of a tuple argument is >= lo.
#define CHECK_ALL_GE(vec, lo, name)                                                        \
  do {                                                                                     \
    for (auto _v : (vec))                                                                  \
      PYDEVIS_CHECK(_v >= (lo), name, ": every entry must be >= ", (lo), ", got ",         \
                    ::pydevis::shape_str(std::vector<int64_t>((vec).begin(), (vec).end()))); \
  } while (0)
