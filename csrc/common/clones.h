// The hot loops compiled for AVX-512 and AVX2 besides the build's baseline ISA, the widest the
// CPU has chosen at load time (GCC/Clang target_clones on x86-64; elsewhere one plain build).
// The build itself stays portable (no -march), see CMakeLists.txt.
#pragma once

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define PYDEVIS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define PYDEVIS_INLINE __attribute__((always_inline)) inline
#else
#define PYDEVIS_CLONES
#define PYDEVIS_INLINE inline
#endif
