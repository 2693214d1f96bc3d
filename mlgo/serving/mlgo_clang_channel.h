// Serving the regalloc policy linked in to one compile job on the compiler's interactive channel.
#ifndef MLGO_CLANG_CHANNEL_H
#define MLGO_CLANG_CHANNEL_H

#include "mlgo_clang_common.h"

namespace mlgo_clang {

// Runs the compile job `Plain` (the compiler and its arguments) with the policy served; the
// compiler's exit code, 1 after reporting a failure, or -N if signal N ended it.
int serveCompile(const Args &Plain);

} // namespace mlgo_clang

#endif // MLGO_CLANG_CHANNEL_H
