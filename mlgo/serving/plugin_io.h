// The inliner plugin's files: the decision log and the training channel, each failing with one
// line that names the file, never with LLVM's crash report, a hang or a silent exit.
//
// The channel speaks LLVM's training-log protocol as interactive mode does (mlgo/protocol/
// training_log.py reads it): the plugin opens BASE.in (advice, host -> plugin) for reading,
// then BASE.out (log, plugin -> host) for writing; it writes one JSON header line naming every
// feature, then per decision a `{"context": IDENTITY}` line (the call site: a JSON object as a
// string), a `{"observation": N}` line, the features' raw little-endian bytes and a newline, and
// reads the host's answer: one little-endian int64, 0 or 1.
#ifndef MLGO_PLUGIN_IO_H
#define MLGO_PLUGIN_IO_H

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace mlgo {

// Writes all of Data to Fd; "" or why not. SIGPIPE is blocked in this thread meanwhile (and a
// pending one consumed), so a reader that went away is an EPIPE error here: otherwise LLVM's
// SIGPIPE handler ends the compiler with status 74 and no message.
inline std::string writeAll(int Fd, const char *Data, size_t Size) {
  sigset_t Pipe, Old;
  sigemptyset(&Pipe);
  sigaddset(&Pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &Pipe, &Old);
  std::string Error;
  while (Size) {
    ssize_t N = ::write(Fd, Data, Size);
    if (N < 0) {
      if (errno == EINTR)
        continue;
      Error = std::strerror(errno);
      break;
    }
    Data += N;
    Size -= static_cast<size_t>(N);
  }
  if (!Error.empty() && !sigismember(&Old, SIGPIPE)) {
    sigset_t Pending;
    sigpending(&Pending);
    if (sigismember(&Pending, SIGPIPE)) {
      struct timespec Zero = {0, 0};
      sigtimedwait(&Pipe, nullptr, &Zero);
    }
  }
  pthread_sigmask(SIG_SETMASK, &Old, nullptr);
  return Error;
}

// Opens Path for appending, refusing anything but a regular file: a FIFO blocks the compiler
// until a reader comes and ends it when the reader goes, and a device (/dev/full) fails the
// writes. Returns the descriptor, or -1 with Error set.
inline int openAppendRegular(const std::string &Path, std::string &Error) {
  int Fd = ::open(Path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
                  0644);
  if (Fd < 0) {
    Error = errno == ENXIO ? "not a regular file (a FIFO)" : std::strerror(errno);
    return -1;
  }
  struct stat St;
  if (::fstat(Fd, &St) != 0 || !S_ISREG(St.st_mode)) {
    ::close(Fd);
    Error = S_ISFIFO(St.st_mode) ? "not a regular file (a FIFO)" : "not a regular file";
    return -1;
  }
  return Fd;
}

// The plugin's end of the training channel.
class Channel {
public:
  ~Channel() {
    for (int Fd : {In, Out})
      if (Fd >= 0)
        ::close(Fd);
  }

  // Opens BASE.in and BASE.out, waiting at most TimeoutSeconds for the host to open BASE.out.
  std::string open(const std::string &Base, int TimeoutSeconds) {
    InPath = Base + ".in";
    OutPath = Base + ".out";
    Timeout = TimeoutSeconds;
    // Non-blocking: a FIFO's reader opens at once, and poll() then waits for the first writer.
    In = ::open(InPath.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (In < 0)
      return "cannot open " + InPath + ": " + std::strerror(errno);
    auto Deadline = std::chrono::steady_clock::now() + std::chrono::seconds(Timeout);
    while ((Out = ::open(OutPath.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
      if (errno != ENXIO) // ENXIO: a FIFO with no reader yet
        return "cannot open " + OutPath + ": " + std::strerror(errno);
      if (std::chrono::steady_clock::now() > Deadline)
        return "the host did not open " + OutPath + " within " + std::to_string(Timeout) + "s";
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    // Blocking writes from here: the host reads as it goes.
    ::fcntl(Out, F_SETFL, ::fcntl(Out, F_GETFL) & ~O_NONBLOCK);
    return "";
  }

  std::string send(const std::string &Bytes) {
    std::string Error = writeAll(Out, Bytes.data(), Bytes.size());
    return Error.empty() ? "" : "cannot write " + OutPath + ": " + Error;
  }

  // Reads one int64 answer.
  std::string receive(int64_t &Value) {
    char Buffer[sizeof(int64_t)];
    size_t Got = 0;
    auto Deadline = std::chrono::steady_clock::now() + std::chrono::seconds(Timeout);
    while (Got < sizeof(Buffer)) {
      auto Left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      Deadline - std::chrono::steady_clock::now())
                      .count();
      if (Left <= 0)
        return "no answer from the host on " + InPath + " within " + std::to_string(Timeout) +
               "s";
      struct pollfd P = {In, POLLIN, 0};
      int Ready = ::poll(&P, 1, static_cast<int>(Left < 1000 ? Left : 1000));
      if (Ready < 0 && errno != EINTR)
        return "cannot wait for " + InPath + ": " + std::strerror(errno);
      if (Ready <= 0)
        continue;
      ssize_t N = ::read(In, Buffer + Got, sizeof(Buffer) - Got);
      if (N > 0) {
        Got += static_cast<size_t>(N);
        continue;
      }
      if (N == 0) // every writer closed its end
        return "the host closed " + InPath + (Got ? " in the middle of an answer" : "");
      if (errno != EAGAIN && errno != EINTR)
        return "cannot read " + InPath + ": " + std::strerror(errno);
    }
    std::memcpy(&Value, Buffer, sizeof(Value));
    return "";
  }

private:
  int In = -1, Out = -1, Timeout = 0;
  std::string InPath, OutPath;
};

} // namespace mlgo

#endif // MLGO_PLUGIN_IO_H
