// Classifying mlgo-clang's arguments: the only implementation (tests/test_wrapper.py has its
// matrix).
#include "mlgo_clang_args.h"

#include <cstddef>
#include <initializer_list>

namespace mlgo_clang {
namespace {

// Options whose value is the next argument (so it is not mistaken for an input file).
const std::initializer_list<const char *> TakesValue = {
    "-o", "-I", "-D", "-U", "-L", "-F", "-T", "-u", "-z", "-x", "-MF", "-MT", "-MQ", "-MJ",
    "-include", "-imacros", "-isystem", "-iquote", "-idirafter", "-iprefix", "-iwithprefix",
    "-iwithprefixbefore", "-isysroot", "--sysroot", "-Xclang", "-Xlinker", "-Xassembler",
    "-Xpreprocessor", "-Xarch_device", "-Xarch_host", "-mllvm", "-target", "-arch",
    "-gcc-toolchain", "-resource-dir", "-ivfsoverlay", "-working-directory",
    "-main-file-name", "-serialize-diagnostics", "-dependency-file", "-aux-triple",
    "-ccc-install-dir", "-fmodules-cache-path", "--include-directory", "--define-macro",
    "-Xopenmp-target", "-cxx-isystem", "-iframework", "-include-pch", "--param"};
// C/C++ (also preprocessed) and LLVM IR: everything that reaches the register allocator.
const std::initializer_list<const char *> SourceExtensions = {
    ".c", ".i", ".cc", ".cp", ".cpp", ".cxx", ".c++", ".C", ".CC", ".CPP", ".ii", ".cppm",
    ".bc", ".ll"};
const std::initializer_list<const char *> SourceLanguages = {"c", "c++", "cpp-output",
                                                             "c++-cpp-output", "ir"};
// Any of these makes the invocation something other than "compile one source to an object".
const std::initializer_list<const char *> PassThroughFlags = {
    "-E", "-M", "-MM", "-S", "-###", "--version", "-v", "--help", "-help", "-fsyntax-only",
    "-emit-llvm", "-emit-ast", "-print-targets", "-dumpversion", "-dumpmachine",
    "-print-search-dirs", "-print-resource-dir", "-print-libgcc-file-name", "-print-prog-name",
    "-print-file-name", "-print-multiarch", "-print-effective-triple", "-print-target-triple",
    "-fdriver-only", "-save-temps"};
// Invocations that neither compile to an object nor link.
const std::initializer_list<const char *> NoLinkFlags = {"-c", "-E", "-S", "-M", "-MM",
                                                         "-fsyntax-only", "-###", "--version"};
const int MaxResponseFileDepth = 8;

// A response file's words, split as a POSIX shell would without expansions: whitespace
// separates; '...' is literal; in "..." only \" and \\ are escapes; elsewhere a backslash makes
// the next character literal. False with Why set on a syntax error.
bool splitWords(const std::string &Text, Args &Out, const char *&Why) {
  std::string Word;
  bool InWord = false;
  for (size_t I = 0, N = Text.size(); I < N; ++I) {
    char C = Text[I];
    if (C == ' ' || C == '\t' || C == '\r' || C == '\n') {
      if (InWord)
        Out.push_back(Word);
      Word.clear();
      InWord = false;
    } else if (C == '\'' || C == '"') {
      InWord = true;
      for (++I; I < N && Text[I] != C; ++I) {
        if (C == '"' && Text[I] == '\\' && I + 1 < N && (Text[I + 1] == '"' || Text[I + 1] == '\\'))
          ++I;
        Word += Text[I];
      }
      if (I >= N)
        return Why = "no closing quotation", false;
    } else if (C == '\\') {
      InWord = true;
      if (++I >= N)
        return Why = "no escaped character", false;
      Word += Text[I];
    } else {
      InWord = true;
      Word += C;
    }
  }
  if (InWord)
    Out.push_back(Word);
  return true;
}

// The extension of the last path component: from its last dot, unless only dots precede that
// dot (".bashrc" has none).
std::string extension(const std::string &Path) {
  size_t Slash = Path.rfind('/');
  std::string Name = Slash == std::string::npos ? Path : Path.substr(Slash + 1);
  size_t Dot = Name.rfind('.');
  if (Dot == std::string::npos || Name.find_first_not_of('.') >= Dot)
    return "";
  return Name.substr(Dot);
}

} // namespace

// Arguments with @file expanded, for classification only (clang reads the files itself).
// False after reporting an unreadable or malformed response file.
bool expandResponseFiles(const Args &In, int Depth, Args &Out) {
  for (const std::string &A : In) {
    std::string Path = A.substr(A.empty() ? 0 : 1);
    if (Depth > MaxResponseFileDepth || A[0] != '@' || !isRegularFile(Path)) {
      Out.push_back(A);
      continue;
    }
    std::string Text;
    Args Words;
    const char *Why = nullptr;
    if (!readFile(Path, Text, Why))
      return say("error", "%s: cannot read the response file: %s", Path.c_str(), Why), false;
    if (!splitWords(Text, Words, Why))
      return say("error", "%s: cannot parse the response file: %s", Path.c_str(), Why), false;
    if (!expandResponseFiles(Words, Depth + 1, Out))
      return false;
  }
  return true;
}

// Whether the (expanded) arguments are a single-source compile job.
bool isCompileJob(const Args &A) {
  bool HasC = false;
  for (const std::string &X : A)
    HasC |= X == "-c";
  if (!HasC)
    return false;
  size_t Sources = 0, Others = 0;
  std::string Language;  // the last -x, "" if none
  for (size_t I = 0; I < A.size();) {
    const std::string &X = A[I];
    if (among(X, PassThroughFlags) || startsWith(X, "-save-temps="))
      return false;
    bool Named = (X == "-x" && I + 1 < A.size()) || (startsWith(X, "-x") && X.size() > 2);
    if (Named) {
      Language = X == "-x" ? A[I + 1] : X.substr(2);
      if (!among(Language, SourceLanguages) && Language != "none")
        return false;
    }
    if (among(X, TakesValue)) {
      I += 2;
      continue;
    }
    if (X == "-")
      ++Sources;
    else if (X[0] != '-')
      ++(among(extension(X), SourceExtensions) || among(Language, SourceLanguages) ? Sources
                                                                                  : Others);
    ++I;
  }
  return Others == 0 && Sources == 1;
}

// The -flto / -flto=MODE in effect (the last, unless -fno-lto follows), or "".
std::string ltoFlag(const Args &A) {
  std::string Found;
  for (const std::string &X : A)
    if (X == "-flto" || startsWith(X, "-flto="))
      Found = X;
    else if (X == "-fno-lto")
      Found.clear();
  return Found;
}

// Whether the driver would link: an input and none of the flags that stop before.
bool isLink(const Args &A) {
  bool Inputs = false;
  for (const std::string &X : A) {
    if (among(X, NoLinkFlags) || startsWith(X, "-print-"))
      return false;
    Inputs |= X[0] != '-';
  }
  return Inputs;
}

} // namespace mlgo_clang
