// ./train_mot plot LOG... -o loss.png: train and validation loss of one or
// several runs on one PNG, drawn by gnuplot (Debian package gnuplot-nox).
// The logs are JSONL (train/log.h, read by common/jsonl.h); their rows go
// to gnuplot inline as data blocks, so no temporary files are made.
//
// gnuplot is a language: whatever text of ours lands in its script (the
// title, the runs' names) goes in as a string literal made by gp_quote, so
// a quote in a name cannot end the string and run the rest as commands
// (gnuplot has `system`). The output path never enters the script: we open
// the file ourselves (so an unwritable -o fails here, with its name, before
// gnuplot runs) and hand it to gnuplot as its stdout, where a PNG terminal
// without `set output` writes.
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fileio.h"
#include "common/jsonl.h"

// s as a gnuplot string literal that stands for s and nothing else: double
// quotes, and every byte but letters and spaces an octal escape, so no quote
// can end it and no backquote (command substitution, done on the raw line)
// or @ (macro) appears in it. Not single quotes with '' for a quote: gnuplot
// 5.4 misreads two of them in a row ('it''''s'). Digits are escaped too, as
// gnuplot takes every octal digit after a backslash ("\0471" is one byte).
inline std::string gp_quote(const std::string& s) {
    std::string q = "\"";
    for (char ch : s) {
        unsigned char c = (unsigned char)ch;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == ' ') q += ch;
        else q += strf("\\%03o", (unsigned)c);
    }
    return q + "\"";
}

// Runs gnuplot with script on its stdin and out_fd as its stdout; returns its
// wait status. Fails when gnuplot cannot be started.
inline int run_gnuplot(const std::string& script, int out_fd) {
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) fail(strf("plot: cannot make a pipe to gnuplot (%s)", std::strerror(errno)));
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipefd[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    char arg0[] = "gnuplot";
    char* argv[] = {arg0, nullptr};
    extern char** environ;
    pid_t pid;
    int rc = posix_spawnp(&pid, "gnuplot", &fa, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[0]);
    if (rc != 0) {
        close(pipefd[1]);
        fail(strf("plot: cannot start gnuplot (%s); install it: apt-get install gnuplot-nox", std::strerror(rc)));
    }
    // a gnuplot that dies early must not kill us with SIGPIPE: its exit status says what happened
    struct sigaction ignore{}, old{};
    ignore.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ignore, &old);
    for (size_t done = 0; done < script.size();) {
        ssize_t n = write(pipefd[1], script.data() + done, script.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += size_t(n);
    }
    close(pipefd[1]);
    sigaction(SIGPIPE, &old, nullptr);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

// Opens a new temporary file beside out_png for a plot (create_temp_file:
// its own name, never a planted file or symlink), its name in *tmp; fails
// naming out_png when it cannot be written. render_plot finishes it.
inline int open_plot_output(const std::string& out_png, std::string* tmp) {
    struct stat st;
    if (stat(out_png.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
        fail(strf("%s: cannot write the plot: is a directory (give -o a file name)", out_png.c_str()));
    int fd = open_temp_file(out_png, tmp, 0644);
    if (fd < 0) fail(strf("%s: cannot write the plot (%s)", out_png.c_str(), std::strerror(errno)));
    return fd;
}

// Runs script through gnuplot into fd (from open_plot_output) and renames
// the temporary file tmp to out_png; closes fd. On failure the temporary
// file is removed and out_png left as it was.
inline void render_plot(const std::string& script, int fd, const std::string& tmp, const std::string& out_png) {
    int status = run_gnuplot(script, fd);
    off_t size = lseek(fd, 0, SEEK_END);
    if (close(fd) != 0) size = -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || size <= 0) {
        std::remove(tmp.c_str());
        fail(strf("plot: gnuplot failed (%s %d; its messages are above)", WIFEXITED(status) ? "exit status" : "signal",
                  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status)));
    }
    if (std::rename(tmp.c_str(), out_png.c_str()) != 0) {
        std::remove(tmp.c_str());
        fail(strf("%s: cannot write the plot (%s)", out_png.c_str(), std::strerror(errno)));
    }
}

inline void plot_logs(const std::vector<std::string>& logs, const std::string& out_png, const std::string& title) {
    if (logs.empty()) fail("plot: give at least one log file");
    for (const std::string& log : logs)
        if (same_file(out_png, log))
            fail(strf("plot: -o %s and the log %s name the same file: the plot would overwrite the log; give another -o",
                      out_png.c_str(), log.c_str()));
    // the output first: a bad -o fails at once, naming it, and gnuplot never runs
    std::string tmp;
    int fd = open_plot_output(out_png, &tmp);
    std::string script;
    try {
        script = "set terminal pngcairo size 1000,600 noenhanced\n";
        script += "set title " + gp_quote(title) + "\nset xlabel 'step'\nset ylabel 'loss (nats per token)'\nset grid\n";
        script += "set key outside right\n";
        std::string plots;
        for (size_t i = 0; i < logs.size(); i++) {
            std::string train, val;
            for (const JsonRow& row : jsonl_read(logs[i])) {
                double step, loss;
                if (!json_number(row, "step", &step)) continue;
                if (json_number(row, "val_loss", &loss)) val += strf("%g %.9g\n", step, loss);
                else if (json_number(row, "loss", &loss)) train += strf("%g %.9g\n", step, loss);
            }
            if (train.empty() && val.empty())
                fail(strf("%s: no loss rows (is it a train_mot --log file?)", logs[i].c_str()));
            std::string name = logs[i].substr(logs[i].find_last_of('/') + 1);  // runs/mot.jsonl -> mot
            name = name.substr(0, name.rfind(".jsonl"));
            int color = (int)i + 1;
            if (!train.empty()) {
                script += strf("$train%zu << EOD\n", i) + train + "EOD\n";
                plots += strf("$train%zu with lines lc %d lw 1 title ", i, color) + gp_quote(name + " train") + ", ";
            }
            if (!val.empty()) {
                script += strf("$val%zu << EOD\n", i) + val + "EOD\n";
                plots += strf("$val%zu with linespoints lc %d lw 2 pt 7 title ", i, color) + gp_quote(name + " val") + ", ";
            }
        }
        script += "plot " + plots.substr(0, plots.size() - 2) + "\n";
    } catch (...) {
        close(fd);
        std::remove(tmp.c_str());
        throw;
    }
    render_plot(script, fd, tmp, out_png);
}
