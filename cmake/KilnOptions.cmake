# Build options shared by every kiln target.

option(KILN_WERROR "Treat compiler warnings as errors (CI turns this on)" OFF)
option(KILN_BUILD_TESTS "Build the Catch2 unit and integration tests" ON)
option(KILN_BUILD_FUZZERS "Build the libFuzzer harnesses in fuzz/ (needs KILN_SANITIZE=fuzz)" OFF)
set(KILN_CUDA "AUTO" CACHE STRING "Build the CUDA targets: AUTO (when nvcc is found), ON (required) or OFF")
set_property(CACHE KILN_CUDA PROPERTY STRINGS AUTO ON OFF)

find_program(KILN_CCACHE ccache)
if(KILN_CCACHE)
  set(CMAKE_CXX_COMPILER_LAUNCHER "${KILN_CCACHE}")
  set(CMAKE_CUDA_COMPILER_LAUNCHER "${KILN_CCACHE}")
endif()

# kiln_target_defaults(<target>): warnings (as errors under KILN_WERROR) for kiln's own code.
function(kiln_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast
      -Wcast-align -Woverloaded-virtual -Wconversion -Wsign-conversion
      -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough
      # Left out: -Wnull-dereference (false positives inside GCC 12 libstdc++ at -O2) and
      # -Wmissing-field-initializers (GCC 12 flags C++20 designated initializers).
      -Wno-missing-field-initializers>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra --Werror all-warnings>)
  if(KILN_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>
      $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Werror>)
  endif()
endfunction()

# Sanitizer builds (the asan, tsan and fuzz presets; docs/reliability.md):
# every kiln target, test and fuzz harness is instrumented, so a finding in a
# library shows up in whichever test reaches it. Third-party libraries stay
# as Debian built them (not instrumented).
#   address  AddressSanitizer (with LeakSanitizer) + UndefinedBehaviorSanitizer,
#            every finding fatal (-fno-sanitize-recover).
#   thread   ThreadSanitizer.
#   fuzz     libFuzzer's coverage + ASan + UBSan (clang only); the harnesses
#            in fuzz/ link libFuzzer's main.
set(KILN_SANITIZE "" CACHE STRING "Instrument every target: address (ASan+UBSan), thread (TSan), fuzz (libFuzzer+ASan+UBSan, clang) or empty")
set_property(CACHE KILN_SANITIZE PROPERTY STRINGS "" address thread fuzz)
if(KILN_SANITIZE STREQUAL "address")
  set(kiln_sanitize_flags -fsanitize=address,undefined -fno-sanitize-recover=all)
elseif(KILN_SANITIZE STREQUAL "thread")
  set(kiln_sanitize_flags -fsanitize=thread)
elseif(KILN_SANITIZE STREQUAL "fuzz")
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "KILN_SANITIZE=fuzz needs clang (libFuzzer); the fuzz preset names clang++-16")
  endif()
  set(kiln_sanitize_flags -fsanitize=address,undefined -fno-sanitize-recover=all)
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fsanitize=fuzzer-no-link>)
elseif(NOT KILN_SANITIZE STREQUAL "")
  message(FATAL_ERROR "KILN_SANITIZE must be address, thread, fuzz or empty, not '${KILN_SANITIZE}'")
endif()
if(KILN_BUILD_FUZZERS AND NOT KILN_SANITIZE STREQUAL "fuzz")
  message(FATAL_ERROR "KILN_BUILD_FUZZERS needs KILN_SANITIZE=fuzz (the fuzz preset)")
endif()
if(kiln_sanitize_flags)
  # -O1: fast enough to run the tests, precise enough for the reports' stacks.
  # Targets that ask for -O3 (the CPU kernels, the model) keep it: it comes later.
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${kiln_sanitize_flags};-O1;-g;-fno-omit-frame-pointer>")
  add_link_options(${kiln_sanitize_flags})
endif()
