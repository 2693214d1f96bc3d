// Binding a generated policy's inputs to the compiler's features by name, as LLVM's release-mode
// model runner binds a compiled model's: each input the policy declares (mlgo/policies/c_source.py
// describes the symbols) reads the compiler's feature of the same name; the compiler's other
// features are ignored; an input the compiler does not send, or sends with another element type
// or count, is an error naming it. One implementation for every program that links a policy,
// and so is the line each appends to MLGO_DECISION_SUMMARY.
#ifndef MLGO_POLICY_BINDING_H
#define MLGO_POLICY_BINDING_H

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>
#include <vector>

extern "C" {
extern const char *const mlgo_policy_feature_names[];
extern const char *const mlgo_policy_feature_types[];
extern const size_t mlgo_policy_feature_elements[];
extern const size_t mlgo_policy_num_features;
}

namespace mlgo {

// A feature as the compiler sends it: its name, element type ("int64_t", "float", ...) and
// element count.
struct CompilerFeature {
  std::string Name, Type;
  size_t Elements;
};

// For each policy input j, Index[j] is the position of its feature among the compiler's. Error
// is empty when every input is bound; else it lists each input that is not, and Index is empty.
struct PolicyBinding {
  std::vector<size_t> Index;
  std::string Error;
};

inline PolicyBinding bindPolicyInputs(const std::vector<CompilerFeature> &Compiler) {
  PolicyBinding B;
  std::vector<std::string> Problems;
  for (size_t I = 0; I < mlgo_policy_num_features; ++I) {
    const std::string Name = mlgo_policy_feature_names[I];
    const std::string Want = std::string(mlgo_policy_feature_types[I]) + " x" +
                             std::to_string(mlgo_policy_feature_elements[I]);
    size_t J = 0;
    while (J < Compiler.size() && Compiler[J].Name != Name)
      ++J;
    if (J == Compiler.size()) {
      Problems.push_back("the policy needs '" + Name + "' (" + Want +
                         "), which the compiler does not send");
      continue;
    }
    const std::string Have = Compiler[J].Type + " x" + std::to_string(Compiler[J].Elements);
    if (Have != Want)
      Problems.push_back("the policy needs '" + Name + "' (" + Want + "), the compiler sends " + Have);
    B.Index.push_back(J);
  }
  if (!Problems.empty()) {
    B.Index.clear();
    B.Error = "the policy was trained on other features than this compiler sends:";
    for (const std::string &P : Problems)
      B.Error += "\n  " + P;
  }
  return B;
}

// Appends Line to the file the environment variable EnvName names, if set, in one write() so
// that the lines of concurrent compilers stay whole. Returns "" or what failed.
inline std::string appendLine(const char *EnvName, const std::string &Line) {
  const char *Path = std::getenv(EnvName);
  if (!Path || !*Path)
    return "";
  int Fd = ::open(Path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  ssize_t Written = -1;
  while (Fd >= 0 && (Written = ::write(Fd, Line.data(), Line.size())) < 0 && errno == EINTR) {
  }
  int Error = errno;
  if (Fd >= 0)
    ::close(Fd);
  if (Written == static_cast<ssize_t>(Line.size()))
    return "";
  return std::string("cannot write ") + EnvName + " " + Path + ": " + std::strerror(Error);
}

// Appends Line to MLGO_DECISION_SUMMARY, if set (format: mlgo/serving/summary.py).
inline std::string appendSummaryLine(const std::string &Line) {
  return appendLine("MLGO_DECISION_SUMMARY", Line);
}

} // namespace mlgo

#endif // MLGO_POLICY_BINDING_H
