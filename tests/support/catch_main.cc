// The one Catch2 main shared by kiln's test executables (compiled once: it is slow).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
