// CHECK for the C++ test programs: a failed condition is printed with its place and counted in g_failures, and the
// program goes on (main returns 1 if g_failures is not 0).
#pragma once

#include <cstdio>

static int g_failures = 0;
#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                                 \
    }                                                                               \
  } while (0)
