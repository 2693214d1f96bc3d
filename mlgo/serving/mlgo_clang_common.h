// What every part of mlgo-clang uses: its one-line messages, MLGO_FALLBACK, small string and
// file helpers, and its line of MLGO_DECISION_SUMMARY.
#ifndef MLGO_CLANG_COMMON_H
#define MLGO_CLANG_COMMON_H

#include <initializer_list>
#include <string>
#include <vector>

namespace mlgo_clang {

using Args = std::vector<std::string>;

int say(const char *Kind, const char *Fmt, ...) __attribute__((format(printf, 2, 3)));
bool fallbackAllowed();
bool startsWith(const std::string &A, const char *Prefix);
bool among(const std::string &A, std::initializer_list<const char *> List);
bool isRegularFile(const std::string &Path);
bool readFile(const std::string &Path, std::string &Out, const char *&Why);
void summaryLine(const char *Policy, long long Decisions, const char *Notes);

} // namespace mlgo_clang

#endif // MLGO_CLANG_COMMON_H
