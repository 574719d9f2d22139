# Third-party libraries, all from Debian's -dev packages (scripts/setup.sh installs them).

find_package(Threads REQUIRED)
find_package(OpenSSL 3 REQUIRED)
find_package(cpprestsdk REQUIRED)
find_package(Boost 1.74 REQUIRED)  # Headers only: Beast and Asio, for base/http_server.
find_package(yaml-cpp REQUIRED)
find_package(nlohmann_json 3.11 REQUIRED)
find_package(prometheus-cpp REQUIRED COMPONENTS core)
if(KILN_BUILD_TESTS)
  find_package(Catch2 2.13 REQUIRED)
  include(Catch)
endif()

# OpenMP (GCC's libgomp, part of the compiler): the CPU kernels' threads.
find_package(OpenMP REQUIRED COMPONENTS CXX)

# jemalloc (Debian's libjemalloc-dev), kiln-router's allocator: a proxied
# request makes a few dozen small allocations, and glibc's malloc cost about
# 5% more CPU a request than jemalloc in bench/router_bench.sh's setup (see
# docs/router.md), as Envoy links tcmalloc for the same reason. Not under a
# sanitizer, which brings its own allocator.
if(KILN_SANITIZE STREQUAL "")
  find_library(KILN_JEMALLOC_LIBRARY NAMES jemalloc)
  if(NOT KILN_JEMALLOC_LIBRARY)
    message(FATAL_ERROR "libjemalloc not found: run scripts/setup.sh (it installs Debian's libjemalloc-dev)")
  endif()
endif()
