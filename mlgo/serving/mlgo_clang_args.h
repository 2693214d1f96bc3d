// mlgo-clang's arguments: @response files expanded, and what the invocation is (a single-source
// compile job, an -flto link, anything else).
#ifndef MLGO_CLANG_ARGS_H
#define MLGO_CLANG_ARGS_H

#include <string>

#include "mlgo_clang_common.h"

namespace mlgo_clang {

bool expandResponseFiles(const Args &In, int Depth, Args &Out);
bool isCompileJob(const Args &A);
std::string ltoFlag(const Args &A);
bool isLink(const Args &A);

} // namespace mlgo_clang

#endif // MLGO_CLANG_ARGS_H
