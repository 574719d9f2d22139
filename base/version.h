// The kiln release and build identity, fixed at configure time.
#ifndef KILN_BASE_VERSION_H_
#define KILN_BASE_VERSION_H_

#include <string>

namespace kiln {

// Semantic version of this kiln build, e.g. "0.1.0".
const char* Version();
// Git commit the build came from, or "unknown" outside a git checkout.
const char* GitCommit();
// One line for `--version` output: "<program> <version> (commit <sha>, <build info>)".
std::string VersionLine(const char* program);

}  // namespace kiln

#endif  // KILN_BASE_VERSION_H_
