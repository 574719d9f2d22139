# Build options shared by every kiln target.

option(KILN_WERROR "Treat compiler warnings as errors (CI turns this on)" OFF)
option(KILN_BUILD_TESTS "Build the Catch2 unit and integration tests" ON)
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
