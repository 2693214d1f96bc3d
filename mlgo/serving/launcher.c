/* The native per-compile path of mlgo-clang / mlgo-clang++.
 *
 * mlgo/cli/wrapper.py does the same thing from Python, but Python's start-up alone costs more
 * than a small compile. `mlgo-clang --print-launcher` resolves everything once (the compiler,
 * the regalloc host built for the policy, the inliner plugin) and builds this file with those
 * paths in launcher_config.h (see mlgo/serving/launcher.py), so that CC can point here and a
 * compile involves no Python at all.
 *
 * Per invocation, exactly as wrapper.py:
 *   - a single-source compile job (-c, one C/C++/IR source, none of the pass-through flags;
 *     @response files are read for this) runs clang-19 with the eviction advisor in
 *     interactive mode, served by the host on two FIFOs in a private directory;
 *   - anything else execs clang-19 unchanged.
 * The FIFOs and the host are removed on success, failure and SIGINT/SIGTERM/SIGHUP/SIGQUIT
 * (forwarded to clang; we then die of the same signal). A host that fails takes clang down
 * with it: a compiler without its host waits for advice forever. MLGO_FALLBACK=1 turns the
 * failures wrapper.py falls back on into a warning and a plain compile; nothing falls back
 * silently.
 *
 * The launcher serves the policies it was made for. If MLGO_REGALLOC_POLICY or
 * MLGO_INLINE_POLICY names another one at compile time, that is an error (or, with
 * MLGO_FALLBACK=1, a warning and a plain compile), never a silent substitution.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launcher_config.h"

extern char **environ;

/* Exit status of the host when the policy expects other features (regalloc_host.cpp). */
#define HOST_EXIT_FEATURE_MISMATCH 3
#define MAX_RESPONSE_FILE_DEPTH 8

/* ---- small helpers --------------------------------------------------------------------- */

static void message(const char *kind, const char *fmt, va_list ap) {
    fprintf(stderr, "mlgo-clang: %s: ", kind);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

static int error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    message("error", fmt, ap);
    va_end(ap);
    return 1;
}

static void warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    message("warning", fmt, ap);
    va_end(ap);
}

static int fallback_allowed(void) {
    const char *v = getenv("MLGO_FALLBACK");
    return v && strcmp(v, "1") == 0;
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) {
        fputs("mlgo-clang: error: out of memory\n", stderr);
        exit(1);
    }
    return q;
}

/* A growable, NULL-terminated argument vector. */
struct strvec {
    char **v;
    size_t n, cap;
};

static void push(struct strvec *s, char *a) {
    if (s->n + 2 > s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->v = xrealloc(s->v, s->cap * sizeof(char *));
    }
    s->v[s->n++] = a;
    s->v[s->n] = NULL;
}

static int in_list(const char *a, const char *const *list) {
    for (; *list; list++)
        if (strcmp(a, *list) == 0) return 1;
    return 0;
}

static int starts_with(const char *a, const char *prefix) {
    return strncmp(a, prefix, strlen(prefix)) == 0;
}

/* ---- classification (mirrors wrapper.pass_through_reason) ------------------------------ */

/* Options whose value is the next argument (so it is not mistaken for an input file). */
static const char *const TAKES_VALUE[] = {
    "-o", "-I", "-D", "-U", "-L", "-F", "-T", "-u", "-z", "-x", "-MF", "-MT", "-MQ", "-MJ",
    "-include", "-imacros", "-isystem", "-iquote", "-idirafter", "-iprefix", "-iwithprefix",
    "-iwithprefixbefore", "-isysroot", "--sysroot", "-Xclang", "-Xlinker", "-Xassembler",
    "-Xpreprocessor", "-Xarch_device", "-Xarch_host", "-mllvm", "-target", "-arch",
    "-gcc-toolchain", "-resource-dir", "-ivfsoverlay", "-working-directory",
    "-main-file-name", "-serialize-diagnostics", "-dependency-file", "-aux-triple",
    "-ccc-install-dir", "-fmodules-cache-path", "--include-directory", "--define-macro",
    "-Xopenmp-target", "-cxx-isystem", "-iframework", "-include-pch", "--param", NULL};
/* C/C++ (also preprocessed) and LLVM IR: everything that reaches the register allocator. */
static const char *const SOURCE_EXTENSIONS[] = {
    ".c", ".i", ".cc", ".cp", ".cpp", ".cxx", ".c++", ".C", ".CC", ".CPP", ".ii", ".cppm",
    ".bc", ".ll", NULL};
static const char *const SOURCE_LANGUAGES[] = {"c", "c++", "cpp-output", "c++-cpp-output",
                                               "ir", NULL};
/* Any of these makes the invocation something other than "compile one source to an object". */
static const char *const PASS_THROUGH_FLAGS[] = {
    "-E", "-M", "-MM", "-S", "-###", "--version", "-v", "--help", "-help", "-fsyntax-only",
    "-emit-llvm", "-emit-ast", "-print-targets", "-dumpversion", "-dumpmachine",
    "-print-search-dirs", "-print-resource-dir", "-print-libgcc-file-name", "-print-prog-name",
    "-print-file-name", "-print-multiarch", "-print-effective-triple", "-print-target-triple",
    "-fdriver-only", "-save-temps", NULL};
/* Invocations that neither compile to an object nor link (wrapper._NO_LINK_FLAGS). */
static const char *const NO_LINK_FLAGS[] = {"-c", "-E", "-S", "-M", "-MM", "-fsyntax-only",
                                            "-###", "--version", NULL};

/* Split a response file's text the way Python's shlex.split does (POSIX mode, no comments):
 * whitespace separates words; '...' is literal; "..." is literal except that \" and \\ are
 * escapes; outside quotes a backslash makes the next character literal. Returns 0, or -1 with
 * *why set on a syntax error. Words are allocated and never freed (the process is short). */
static int split_words(const char *text, struct strvec *out, const char **why) {
    size_t len = strlen(text);
    char *word = xrealloc(NULL, len + 1);
    size_t w = 0;
    int in_word = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            if (in_word) {
                word[w] = 0;
                push(out, strdup(word));
                w = 0;
                in_word = 0;
            }
        } else if (c == '\'') {
            in_word = 1;
            for (i++; i < len && text[i] != '\''; i++) word[w++] = text[i];
            if (i >= len) return *why = "no closing quotation", -1;
        } else if (c == '"') {
            in_word = 1;
            for (i++; i < len && text[i] != '"'; i++) {
                if (text[i] == '\\' && i + 1 < len && (text[i + 1] == '"' || text[i + 1] == '\\'))
                    i++;
                word[w++] = text[i];
            }
            if (i >= len) return *why = "no closing quotation", -1;
        } else if (c == '\\') {
            in_word = 1;
            if (++i >= len) return *why = "no escaped character", -1;
            word[w++] = text[i];
        } else {
            in_word = 1;
            word[w++] = c;
        }
    }
    if (in_word) {
        word[w] = 0;
        push(out, strdup(word));
    }
    free(word);
    return 0;
}

static char *read_file(const char *path, const char **why) {
    FILE *f = fopen(path, "rb");
    if (!f) return *why = strerror(errno), NULL;
    size_t n = 0, cap = 4096;
    char *buf = xrealloc(NULL, cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0) buf = xrealloc(buf, cap *= 2);
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return *why = "read error", NULL;
    }
    buf[n] = 0;
    return buf;
}

static int is_regular_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Arguments with @file expanded, for classification only (clang reads the files itself).
 * Returns -1 after reporting an unreadable or malformed response file. */
static int expand_response_files(char **args, size_t n, int depth, struct strvec *out) {
    for (size_t i = 0; i < n; i++) {
        const char *a = args[i];
        if (depth > MAX_RESPONSE_FILE_DEPTH || a[0] != '@' || !is_regular_file(a + 1)) {
            push(out, args[i]);
            continue;
        }
        const char *why = NULL;
        char *text = read_file(a + 1, &why);
        if (!text) return error("%s: cannot read the response file: %s", a + 1, why), -1;
        struct strvec words = {0};
        if (split_words(text, &words, &why) != 0)
            return error("%s: cannot parse the response file: %s", a + 1, why), -1;
        if (expand_response_files(words.v, words.n, depth + 1, out) != 0) return -1;
    }
    return 0;
}

/* os.path.splitext(path)[1]: from the last dot of the last component, unless that component
 * is only dots up to there (".bashrc" has no extension). */
static const char *extension(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    const char *dot = strrchr(name, '.');
    if (!dot) return "";
    for (const char *p = name; p < dot; p++)
        if (*p != '.') return dot;
    return "";
}

/* 1 for a single-source compile job, 0 for anything else (args: response files expanded). */
static int is_compile_job(struct strvec args) {
    int has_c = 0;
    for (size_t i = 0; i < args.n; i++) has_c |= strcmp(args.v[i], "-c") == 0;
    if (!has_c) return 0;
    size_t sources = 0, others = 0;
    const char *language = NULL;
    for (size_t i = 0; i < args.n;) {
        const char *a = args.v[i];
        if (in_list(a, PASS_THROUGH_FLAGS) || starts_with(a, "-save-temps=")) return 0;
        const char *named = NULL;
        if (strcmp(a, "-x") == 0 && i + 1 < args.n)
            named = args.v[i + 1];
        else if (starts_with(a, "-x") && strlen(a) > 2)
            named = a + 2;
        if (named) {
            language = named;
            if (!in_list(language, SOURCE_LANGUAGES) && strcmp(language, "none") != 0) return 0;
        }
        if (in_list(a, TAKES_VALUE)) {
            i += 2;
            continue;
        }
        if (strcmp(a, "-") == 0)
            sources++;
        else if (a[0] != '-') {
            if (in_list(extension(a), SOURCE_EXTENSIONS) ||
                (language && in_list(language, SOURCE_LANGUAGES)))
                sources++;
            else
                others++;
        }
        i++;
    }
    return others == 0 && sources == 1;
}

/* FNV-1a (64 bit) of a file's bytes (launcher.fnv1a64); 0 with *why set if it cannot be read.
 * Checked before each compile: a truncated plugin makes clang die in dlopen, a truncated host
 * makes every compile fail with no message of its own. */
static unsigned long long fnv1a64_file(const char *path, const char **why) {
    FILE *f = fopen(path, "rb");
    if (!f) return *why = strerror(errno), 0;
    unsigned long long h = 0xcbf29ce484222325ULL;
    unsigned char buf[1 << 16];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < got; i++) h = (h ^ buf[i]) * 0x100000001b3ULL;
    int failed = ferror(f);
    fclose(f);
    if (failed) return *why = "read error", 0;
    return h;
}

/* NULL if `path` has the content this launcher was made with, else what is wrong with it. */
static const char *damaged(const char *path, unsigned long long expected) {
    const char *why = NULL;
    unsigned long long h = fnv1a64_file(path, &why);
    if (why) return why;
    return h == expected ? NULL : "its content differs from when this launcher was made "
                                  "(damaged or replaced)";
}

/* The -flto / -flto=MODE in effect (the last, unless -fno-lto follows), or NULL. */
static const char *lto_flag(struct strvec args) {
    const char *found = NULL;
    for (size_t i = 0; i < args.n; i++) {
        if (strcmp(args.v[i], "-flto") == 0 || starts_with(args.v[i], "-flto="))
            found = args.v[i];
        else if (strcmp(args.v[i], "-fno-lto") == 0)
            found = NULL;
    }
    return found;
}

/* Whether the driver would link: an input and none of the flags that stop before. */
static int is_link(struct strvec args) {
    int inputs = 0;
    for (size_t i = 0; i < args.n; i++) {
        if (in_list(args.v[i], NO_LINK_FLAGS) || starts_with(args.v[i], "-print-")) return 0;
        inputs += args.v[i][0] != '-';
    }
    return inputs > 0;
}

/* Appends a line to MLGO_DECISION_SUMMARY for what this invocation does not serve (format in
 * mlgo/serving/summary.py), in one write so that concurrent compiles keep their lines whole. */
static void summary_line(const char *problem, const char *policy, const char *notes) {
    const char *path = getenv("MLGO_DECISION_SUMMARY");
    if (!path || !*path) return;
    size_t len = strlen(problem) + strlen(policy) + strlen(notes) + 16;
    char *line = xrealloc(NULL, len);
    int size = snprintf(line, len, "%s\t%s\t-\t0\t-\t%s\n", problem, policy, notes);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, (size_t)size) != size)
        warn("cannot write MLGO_DECISION_SUMMARY %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    free(line);
}

/* ---- the compiler ----------------------------------------------------------------------- */

static int executable_file(const char *path) {
    return is_regular_file(path) && access(path, X_OK) == 0;
}

static char *search_path(const char *name) {
    const char *path = getenv("PATH");
    if (!path) path = "/bin:/usr/bin";
    size_t nlen = strlen(name);
    for (const char *d = path;; d++) {
        const char *end = strchr(d, ':');
        size_t dlen = end ? (size_t)(end - d) : strlen(d);
        char *candidate = xrealloc(NULL, dlen + nlen + 2);
        if (dlen == 0)  /* an empty PATH entry is the current directory, as in os.path.join */
            memcpy(candidate, name, nlen + 1);
        else
            snprintf(candidate, dlen + nlen + 2, "%.*s/%s", (int)dlen, d, name);
        if (executable_file(candidate)) return candidate;
        free(candidate);
        if (!end) return NULL;
        d = end;
    }
}

/* The compiler: MLGO_CLANG / MLGO_CLANG__ if set (as wrapper.py honours it), else the one
 * resolved when this launcher was made. NULL after reporting that it is not there. */
static const char *compiler(void) {
    const char *override = getenv(CONFIG_COMPILER_ENV);
    const char *path = override && *override ? override : CONFIG_COMPILER;
    if (!strchr(path, '/')) {
        char *found = search_path(path);
        if (found) path = found;
    }
    if (access(path, X_OK) != 0) {
        error("%s-19 not found; the regalloc host is built with it (apt-get install clang-19)",
              CONFIG_DRIVER);
        return NULL;
    }
    return path;
}

static void exec_compiler(const char *clang, struct strvec *extra, char **args, size_t n) {
    struct strvec argv = {0};
    push(&argv, (char *)clang);
    for (size_t i = 0; extra && i < extra->n; i++) push(&argv, extra->v[i]);
    for (size_t i = 0; i < n; i++) push(&argv, args[i]);
    execv(clang, argv.v);
    exit(error("cannot run %s: %s", clang, strerror(errno)));
}

/* ---- serving one compile ---------------------------------------------------------------- */

static const int FORWARDED_SIGNALS[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
#define N_FORWARDED (sizeof FORWARDED_SIGNALS / sizeof FORWARDED_SIGNALS[0])

static volatile sig_atomic_t clang_pid, host_pid, received;

static void forward(int signum) {
    if (!received) received = signum;
    if (clang_pid > 0) kill(clang_pid, signum);
    if (host_pid > 0) kill(host_pid, SIGKILL);
}

static sigset_t forwarded_set(void) {
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < N_FORWARDED; i++) sigaddset(&set, FORWARDED_SIGNALS[i]);
    return set;
}

/* posix_spawn with the forwarded signals unblocked and at their defaults in the child.
 * Called with those signals blocked, so the pid is recorded before any handler can run. */
static int spawn(pid_t *pid, const char *path, char **argv) {
    posix_spawnattr_t attr;
    sigset_t empty, defaults = forwarded_set();
    sigemptyset(&empty);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &empty);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawn(pid, path, NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    return rc;
}

/* The compiler, started like spawn() but also told to die with us (PR_SET_PDEATHSIG): a
 * compiler that outlives its launcher (kill -9) would block for ever opening a channel nobody
 * serves, holding the caller's stdout and stderr. The check of the parent after prctl closes
 * the window in which we could die before the request took effect. A failed exec is reported
 * through a close-on-exec pipe, so the caller still gets "cannot run" with the errno. */
static int spawn_compiler(pid_t *pid, const char *path, char **argv) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return errno;
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) {
        int e = errno;
        close(report[0]);
        close(report[1]);
        return e;
    }
    if (child == 0) {
        sigset_t empty;
        for (size_t i = 0; i < N_FORWARDED; i++) signal(FORWARDED_SIGNALS[i], SIG_DFL);
        sigemptyset(&empty);
        sigprocmask(SIG_SETMASK, &empty, NULL);
        close(report[0]);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
        execv(path, argv);
        int e = errno;
        ssize_t ignored = write(report[1], &e, sizeof e);
        (void)ignored;
        _exit(127);
    }
    close(report[1]);
    int e = 0;
    ssize_t got;
    while ((got = read(report[0], &e, sizeof e)) < 0 && errno == EINTR) {
    }
    close(report[0]);
    if (got == (ssize_t)sizeof e) {
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
        }
        return e;
    }
    *pid = child;
    return 0;
}

/* wait status -> exit code, or -N if signal N ended the process (os.waitstatus_to_exitcode). */
static int exit_code(int status) {
    return WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
}

/* Wait for one of our children to end; returns its pid and sets *status. The pid variable the
 * signal handler uses is cleared before the process is reaped, so a handler never signals a
 * pid that the kernel may already have handed to someone else. */
static pid_t wait_child(int *status) {
    siginfo_t info;
    for (;;) {
        memset(&info, 0, sizeof info);
        if (waitid(P_ALL, 0, &info, WEXITED | WNOWAIT) == 0) break;
        if (errno != EINTR) return -1;
    }
    sigset_t set = forwarded_set(), old;
    sigprocmask(SIG_BLOCK, &set, &old);
    if (info.si_pid == clang_pid) clang_pid = 0;
    if (info.si_pid == host_pid) host_pid = 0;
    while (waitpid(info.si_pid, status, 0) < 0 && errno == EINTR) {
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return info.si_pid;
}

static void kill_and_reap(volatile sig_atomic_t *pid) {
    sigset_t set = forwarded_set(), old;
    sigprocmask(SIG_BLOCK, &set, &old);
    pid_t p = *pid;
    *pid = 0;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (p > 0) {
        kill(p, SIGKILL);
        while (waitpid(p, NULL, 0) < 0 && errno == EINTR) {
        }
    }
}

static int run_plain(const char *clang, char **argv) {
    sigset_t set = forwarded_set(), old;
    sigprocmask(SIG_BLOCK, &set, &old);
    pid_t pid;
    int rc = spawn_compiler(&pid, clang, argv);
    if (rc == 0) clang_pid = pid;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) return error("cannot run %s: %s", clang, strerror(rc));
    int status = 0;
    while (clang_pid > 0) wait_child(&status);
    return exit_code(status);
}

/* MLGO_HOST_OPEN_TIMEOUT as whole seconds: `90`, `90s`, `5m` or `1h` (wrapper.parse_duration);
 * -1 after reporting anything else, so that `1h` is never read as 1 second. */
static long long host_open_timeout(void) {
    const char *text = getenv("MLGO_HOST_OPEN_TIMEOUT");
    if (!text) return 3600;
    const long long max = 2147483647LL;
    long long value = 0;
    const char *p = text;
    for (; *p >= '0' && *p <= '9'; p++)
        if ((value = value * 10 + (*p - '0')) > max) value = max + 1;
    long long unit = 0;
    if (p > text) {
        if (*p == 0 || (p[1] == 0 && *p == 's'))
            unit = 1;
        else if (p[1] == 0 && *p == 'm')
            unit = 60;
        else if (p[1] == 0 && *p == 'h')
            unit = 3600;
    }
    if (!unit) {
        error("MLGO_HOST_OPEN_TIMEOUT='%s' is not a duration: give whole seconds, or a number "
              "with s, m or h (90, 90s, 5m, 1h)", text);
        return -1;
    }
    if (value > max / unit || value * unit < 1) {
        error("MLGO_HOST_OPEN_TIMEOUT='%s' is out of range: from 1s to %llds", text, max);
        return -1;
    }
    return value * unit;
}

/* Where the private directories go: MLGO_TMPDIR, else TMPDIR, else /tmp. */
static const char *channel_parent(void) {
    const char *parent = getenv("MLGO_TMPDIR");
    if (!parent || !*parent) parent = getenv("TMPDIR");
    return parent && *parent ? parent : "/tmp";
}

/* A new directory in `parent` only we can use, for the FIFOs. */
static char *private_dir(const char *parent, const char **why) {
    size_t size = strlen(parent) + 64;
    char *path = xrealloc(NULL, size);
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned char r[6];
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) return *why = strerror(errno), NULL;
        snprintf(path, size, "%s/mlgo-clang-%d-%02x%02x%02x%02x%02x%02x", parent, (int)getpid(),
                 r[0], r[1], r[2], r[3], r[4], r[5]);
        if (mkdir(path, 0700) == 0) return path;
        if (errno != EEXIST) return *why = strerror(errno), NULL;
    }
    *why = "every name tried exists";
    return NULL;
}

/* argv for clang: [clang, <channel flags>, <extra>, <user args>]. */
static char **compiler_argv(const char *clang, char **channel, struct strvec *extra,
                            char **args, size_t n) {
    struct strvec argv = {0};
    push(&argv, (char *)clang);
    for (; channel && *channel; channel++) push(&argv, *channel);
    for (size_t i = 0; i < extra->n; i++) push(&argv, extra->v[i]);
    for (size_t i = 0; i < n; i++) push(&argv, args[i]);
    return argv.v;
}

static int serve_compile(const char *clang, const char *host, struct strvec *extra,
                         char **args, size_t n, const char *policy) {
    char **plain_argv = compiler_argv(clang, NULL, extra, args, n);
    long long open_timeout = host_open_timeout();
    if (open_timeout < 0) return 1;
    char timeout[32];
    snprintf(timeout, sizeof timeout, "%lld", open_timeout);
    const char *why = NULL;
    const char *parent = channel_parent();
    char *workdir = private_dir(parent, &why);
    if (!workdir) {
        if (!fallback_allowed())
            return error("%s: cannot create the channel directory: %s", parent, why);
        warn("%s: cannot create the channel directory, compiling with plain clang-19 "
             "(MLGO_FALLBACK=1): %s", parent, why);
        return run_plain(clang, plain_argv);
    }
    size_t blen = strlen(workdir) + 16;
    char *base = xrealloc(NULL, blen), *fifo_in = xrealloc(NULL, blen + 4),
         *fifo_out = xrealloc(NULL, blen + 4);
    snprintf(base, blen, "%s/channel", workdir);
    snprintf(fifo_in, blen + 4, "%s.in", base);
    snprintf(fifo_out, blen + 4, "%s.out", base);

    struct sigaction sa, previous[N_FORWARDED];
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < N_FORWARDED; i++)
        sigaction(FORWARDED_SIGNALS[i], &sa, &previous[i]);

    int result;
    sigset_t blocked = forwarded_set(), old;
    char parent_pid[32];
    snprintf(parent_pid, sizeof parent_pid, "%d", (int)getpid());
    char *host_argv[] = {(char *)host, base, timeout, parent_pid, NULL};

    sigprocmask(SIG_BLOCK, &blocked, &old);
    int rc = 0;
    pid_t pid;
    if (mkfifo(fifo_in, 0600) != 0 || mkfifo(fifo_out, 0600) != 0)
        rc = errno;
    else if ((rc = spawn(&pid, host, host_argv)) == 0)
        host_pid = pid;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        if (!fallback_allowed()) {
            result = error("cannot start the regalloc host %s: %s", host, strerror(rc));
            goto cleanup;
        }
        warn("cannot start the regalloc host %s, compiling with plain clang-19 "
             "(MLGO_FALLBACK=1): %s", host, strerror(rc));
        result = run_plain(clang, plain_argv);
        goto cleanup;
    }
    if (received) {
        result = -received;
        goto cleanup;
    }

    size_t clen = strlen(base) + 64;
    char *channel_flag = xrealloc(NULL, clen);
    snprintf(channel_flag, clen, "-regalloc-evict-interactive-channel-base=%s", base);
    char *channel[] = {"-mllvm", "-regalloc-enable-advisor=release", "-mllvm", channel_flag,
                       NULL};
    char **served_argv = compiler_argv(clang, channel, extra, args, n);
    sigprocmask(SIG_BLOCK, &blocked, &old);
    rc = spawn_compiler(&pid, clang, served_argv);
    if (rc == 0) clang_pid = pid;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        result = error("cannot run %s: %s", clang, strerror(rc));
        goto cleanup;
    }

    pid_t served_clang = pid;
    int clang_status = 0, host_status = 0, host_done = 0;
    for (;;) {
        int status;
        pid_t done = wait_child(&status);
        if (done < 0) {
            result = error("waiting for %s: %s", clang, strerror(errno));
            goto cleanup;
        }
        if (done == served_clang) {
            clang_status = status;
            break;
        }
        host_done = 1;
        host_status = status;
        if (exit_code(status) != 0) {
            /* A compiler whose host is gone waits for advice forever: stop it. */
            kill_and_reap(&clang_pid);
            break;
        }
    }
    if (host_done && exit_code(host_status) != 0) {
        int code = exit_code(host_status);
        if (received) {
            result = -received;
        } else if (fallback_allowed()) {
            warn("the regalloc host for '%s' failed (status %d), compiling with plain clang-19 "
                 "(MLGO_FALLBACK=1)", policy, code);
            result = run_plain(clang, plain_argv);
        } else if (code < 0) { /* no message of its own to point at */
            result = error("the regalloc host %s for '%s' was killed by signal %d (%s)", host,
                           policy, -code, strsignal(-code));
        } else {
            result = error("the regalloc host for '%s' failed with status %d%s; see its message "
                           "above", policy, code,
                           code == HOST_EXIT_FEATURE_MISMATCH
                               ? " (the policy was trained on other features than this "
                                 "compiler sends)"
                               : "");
        }
        goto cleanup;
    }
    result = exit_code(clang_status);

cleanup:
    kill_and_reap(&clang_pid);
    kill_and_reap(&host_pid);
    unlink(fifo_in);
    unlink(fifo_out);
    rmdir(workdir);
    for (size_t i = 0; i < N_FORWARDED; i++)
        sigaction(FORWARDED_SIGNALS[i], &previous[i], NULL);
    return result;
}

/* Exit like clang did: with its status, or killed by the same signal, so that make and shells
 * report an interrupted compile as interrupted. Called after all clean-up. */
static int finish(int code) {
    if (code < 0) {
        signal(-code, SIG_DFL);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, -code);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        raise(-code);
        return 128 - code;
    }
    return code;
}

/* The policy this launcher serves vs the one the environment asks for at compile time:
 * NULL if they agree, else the environment's. */
static const char *mismatch(const char *variable, const char *served, int unset_means_none) {
    const char *wanted = getenv(variable);
    if (!wanted || (unset_means_none && !*wanted)) return NULL;
    if (served && strcmp(served, wanted) == 0) return NULL;
    return wanted;
}

int main(int argc, char **argv) {
    const char *clang = compiler();
    if (!clang) return 1;
    char **args = argv + 1;
    size_t n = (size_t)argc - 1;
    struct strvec expanded = {0};
    if (expand_response_files(args, n, 0, &expanded) != 0) return 1;
    int job = is_compile_job(expanded);
    const char *lto = lto_flag(expanded);
    /* An -flto link: the whole program's code generation happens here, inside the linker. */
    int lto_link = !job && lto && is_link(expanded);
    if (!job && !lto_link) exec_compiler(clang, NULL, args, n);
    if (lto_link && CONFIG_HOST) {
        warn("%s link: code generation (and register allocation) runs in the linker, which "
             "mlgo does not serve: the regalloc policy '%s' is not applied to this program",
             lto, CONFIG_REGALLOC_POLICY);
        summary_line("regalloc", CONFIG_REGALLOC_POLICY, "lto-link-not-served");
    }
    /* Only lld loads pass plugins at the link. */
    int lld = 0;
    for (size_t i = 0; i < expanded.n; i++) lld |= strcmp(expanded.v[i], "-fuse-ld=lld") == 0;
    const char *plugin_flag = lto_link ? "-Wl,--load-pass-plugin=" : "-fpass-plugin=";

    struct strvec extra = {0};
    const char *other = mismatch("MLGO_INLINE_POLICY", CONFIG_INLINE_POLICY, 1);
    const char *served_inline = CONFIG_INLINE_POLICY ? CONFIG_INLINE_POLICY : "(none)";
    if (other) {
        if (!fallback_allowed())
            return error("%s serves inline policy '%s', but MLGO_INLINE_POLICY is '%s'; make a "
                         "launcher for it with the variable set when printing: "
                         "`MLGO_INLINE_POLICY=%s mlgo-%s --print-launcher`", argv[0],
                         served_inline, other, other, CONFIG_DRIVER);
        warn("%s serves inline policy '%s', not MLGO_INLINE_POLICY '%s'; using clang's own "
             "inliner (MLGO_FALLBACK=1)", argv[0], served_inline, other);
    } else if (CONFIG_PLUGIN && lto_link && !lld) {
        warn("%s link without -fuse-ld=lld: the inline policy '%s' is not applied to the link's "
             "inlining (only lld can load the plugin)", lto, CONFIG_INLINE_POLICY);
    } else if (CONFIG_PLUGIN) {
        const char *bad = is_regular_file(CONFIG_PLUGIN)
                              ? damaged(CONFIG_PLUGIN, CONFIG_PLUGIN_FNV1A64) : "it is gone";
        if (!bad) {
            size_t len = strlen(CONFIG_PLUGIN) + 32;
            char *flag = xrealloc(NULL, len);
            snprintf(flag, len, "%s%s", plugin_flag, CONFIG_PLUGIN);
            push(&extra, flag);
        } else if (!fallback_allowed()) {
            return error("inliner plugin for '%s': %s: %s; make the launcher again with "
                         "`mlgo-clang --print-launcher`", CONFIG_INLINE_POLICY, CONFIG_PLUGIN,
                         bad);
        } else {
            warn("inliner plugin for '%s' unavailable, using clang's own inliner "
                 "(MLGO_FALLBACK=1): %s: %s", CONFIG_INLINE_POLICY, CONFIG_PLUGIN, bad);
        }
    }

    if (lto_link) exec_compiler(clang, &extra, args, n);

    other = mismatch("MLGO_REGALLOC_POLICY", CONFIG_REGALLOC_POLICY, 0);
    if (other) {
        if (!fallback_allowed())
            return error("%s serves regalloc policy '%s', but MLGO_REGALLOC_POLICY is '%s'; "
                         "make a launcher for it with the variable set when printing: "
                         "`MLGO_REGALLOC_POLICY=%s mlgo-%s --print-launcher`", argv[0],
                         CONFIG_REGALLOC_POLICY, other, other, CONFIG_DRIVER);
        warn("%s serves regalloc policy '%s', not MLGO_REGALLOC_POLICY '%s'; compiling with "
             "plain clang-19 (MLGO_FALLBACK=1)", argv[0], CONFIG_REGALLOC_POLICY, other);
        exec_compiler(clang, &extra, args, n);
    }
    if (!CONFIG_HOST) exec_compiler(clang, &extra, args, n); /* policy "default" */
    if (lto) {
        /* The object is bitcode: registers are allocated at the link (warned about there). */
        warn("%s: this compile makes bitcode and its registers are allocated at the link, "
             "which mlgo does not serve: the regalloc policy '%s' is not applied", lto,
             CONFIG_REGALLOC_POLICY);
        summary_line("regalloc", CONFIG_REGALLOC_POLICY, "lto-not-served");
        exec_compiler(clang, &extra, args, n);
    }
    const char *bad = executable_file(CONFIG_HOST) ? damaged(CONFIG_HOST, CONFIG_HOST_FNV1A64)
                                                   : "it is gone";
    if (bad) {
        if (!fallback_allowed())
            return error("regalloc host for '%s': %s: %s; make the launcher again with "
                         "`mlgo-clang --print-launcher`", CONFIG_REGALLOC_POLICY, CONFIG_HOST,
                         bad);
        warn("regalloc host for '%s' unavailable, compiling with plain clang-19 "
             "(MLGO_FALLBACK=1): %s: %s", CONFIG_REGALLOC_POLICY, CONFIG_HOST, bad);
        exec_compiler(clang, &extra, args, n);
    }
    return finish(serve_compile(clang, CONFIG_HOST, &extra, args, n, CONFIG_REGALLOC_POLICY));
}
