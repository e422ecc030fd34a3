// Inputs that are not what they seem, through the real programs (issue 11):
// quotes in plot titles and log names (which once went into gnuplot's script
// as code), an unwritable plot output, a FIFO or a directory where a
// checkpoint, shard or tokenizer file belongs (a FIFO once blocked forever),
// a prepare that fails halfway over an existing data set, and a bad token id
// in a later shard (once found only when the run reached it), and a TEXT
// for make reproduce that is a command line.
//
// Scratch files are build/ti_*. Runs that could hang if a check regressed
// (the FIFOs) go through `timeout`, so a regression fails in seconds.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "common/fileio.h"
#include "data/dataloader.h"
#include "tests/bad_input.h"
#include "tests/program.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace fs = std::filesystem;

// A fresh, empty scratch folder.
static std::string scratch(const std::string& name) {
    std::string d = "build/" + name;
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

static const std::string PNG_MAGIC("\x89PNG\r\n\x1a\n", 8);

static bool have_gnuplot() { return std::system("command -v gnuplot > /dev/null 2>&1") == 0; }

// A small train_mot log: train rows every step, validation rows every 5.
static void write_log(const std::string& path) {
    std::string s;
    for (int step = 1; step <= 20; step++) {
        s += "{\"step\": " + std::to_string(step) + ", \"loss\": " + std::to_string(4.0 - 0.1 * step) + ", \"lr\": 0.001}\n";
        if (step % 5 == 0) s += "{\"step\": " + std::to_string(step) + ", \"val_loss\": " + std::to_string(4.1 - 0.1 * step) + "}\n";
    }
    write_bytes(path, s);
}

// ---------------------------------------------------------------- plot

TEST_CASE("plot: quotes in the title, the log names and -o are plain text") {
    if (!have_gnuplot()) {
        MESSAGE("gnuplot is not on PATH: plot test skipped");
        return;
    }
    std::string d = scratch("ti_plot_quotes");
    std::string log1 = d + "/Romeo's run.jsonl", log2 = d + "/it''s \"two\".jsonl", png = d + "/Juliet's loss.png";
    write_log(log1);
    write_log(log2);
    std::string title = "it's `touch " + d + "/backquote` @macro \\ 'quoted'";
    Run r = run("plot " + sh_quote(log1) + " " + sh_quote(log2) + " -o " + sh_quote(png) + " --title " + sh_quote(title));
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(slurp(png).substr(0, 8) == PNG_MAGIC);
    CHECK(leftover_temp_files(png).empty());
    CHECK_FALSE(exists(d + "/backquote"));
}

TEST_CASE("plot: a log name or a title cannot run commands") {
    if (!have_gnuplot()) {
        MESSAGE("gnuplot is not on PATH: plot test skipped");
        return;
    }
    std::string d = scratch("ti_plot_inject");
    // the name (no '/' in a file name) closes gnuplot's string and calls system
    std::string log = d + "/a'; system 'cd build; cd ti_plot_inject; touch X'; print '.jsonl";
    write_log(log);
    std::string title = "t'; system 'touch " + d + "/Y'; print '";
    Run r = run("plot " + sh_quote(log) + " -o " + d + "/out.png --title " + sh_quote(title));
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK_FALSE(exists(d + "/X"));
    CHECK_FALSE(exists(d + "/Y"));
    CHECK(slurp(d + "/out.png").substr(0, 8) == PNG_MAGIC);
}

TEST_CASE("plot: an output that cannot be written fails first, naming it, and writes nothing") {
    if (!have_gnuplot()) {
        MESSAGE("gnuplot is not on PATH: plot test skipped");
        return;
    }
    std::string d = scratch("ti_plot_out");
    write_log(d + "/run.jsonl");
    write_bytes(d + "/file", "a regular file\n");
    fs::create_directories(d + "/folder");
    struct Case {
        std::string out, why;
    };
    std::vector<Case> cases = {
        {d + "/missing/sub/loss.png", "No such file or directory"},
        {d + "/file/loss.png", "Not a directory"},
        {d + "/folder", "is a directory"},
    };
    if (geteuid() != 0) {  // root writes anywhere
        fs::create_directories(d + "/readonly");
        chmod((d + "/readonly").c_str(), 0555);
        cases.push_back({d + "/readonly/loss.png", "Permission denied"});
    }
    for (const Case& c : cases) {
        Run r = run("plot " + d + "/run.jsonl -o " + c.out);
        INFO("-o ", c.out);
        expect_error(r, {c.out + ": cannot write the plot", c.why});
        CHECK(r.out.find(PNG_MAGIC) == std::string::npos);  // no PNG dumped on the terminal
        CHECK(leftover_temp_files(c.out).empty());
    }
    CHECK_FALSE(exists(d + "/missing"));
    CHECK(fs::is_directory(d + "/folder"));
    CHECK(fs::is_empty(d + "/folder"));
    if (geteuid() != 0) chmod((d + "/readonly").c_str(), 0755);
}

TEST_CASE("plot: a symlink planted at the output's temporary name is not written through") {
    if (!have_gnuplot()) {
        MESSAGE("gnuplot is not on PATH: plot test skipped");
        return;
    }
    std::string d = scratch("ti_plot_planted");
    write_log(d + "/run.jsonl");
    write_bytes(d + "/victim.txt", "the victim's own bytes\n");
    // the plot once went to <out>.tmp, opened following symlinks with
    // O_TRUNC: the victim became the PNG (and was then renamed away)
    fs::create_symlink("victim.txt", d + "/loss.png.tmp");
    Run r = run("plot " + d + "/run.jsonl -o " + d + "/loss.png");
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(slurp(d + "/victim.txt") == "the victim's own bytes\n");
    CHECK(fs::is_symlink(d + "/loss.png.tmp"));
    CHECK(slurp(d + "/loss.png").substr(0, 8) == PNG_MAGIC);
    CHECK(leftover_temp_files(d + "/loss.png").empty());
}

// ---------------------------------------------------------------- FIFOs and directories

// A token shard (vocab 64), a tokenizer-free tiny model trained on it for
// zero steps, and a log: the valid inputs next to which the bad one goes.
static const char* TINY = " --vocab 64 --layers 1 --heads 1 --d-model 16 --ffn dense --batch 4 --seq 8"
                          " --val-batches 1 --sample-every 0 --device cpu";

static std::string make_valid_inputs(const std::string& d) {
    std::vector<uint16_t> t(600);
    for (size_t i = 0; i < t.size(); i++) t[i] = uint16_t(i * 7 % 64);
    write_raw_shard(d + "/train.bin", t);
    Run r = run("--data " + d + "/train.bin --steps 0 --val-every 0 --save " + d + "/model.ckpt" + TINY);
    INFO(r.out);
    REQUIRE(r.rc == 0);
    return d + "/model.ckpt";
}

// Every place a checkpoint, shard, tokenizer or log path is read, with bad in it.
static std::vector<std::string> bad_input_commands(const std::string& d, const std::string& bad) {
    std::string data = " --data " + d + "/train.bin", ckpt = d + "/model.ckpt";
    std::string train = std::string(" --steps 1 --val-every 0") + TINY;
    std::vector<std::string> cmds = {
        "--load " + bad + data + train,                                    // checkpoint
        "sample --load " + bad,                                           // checkpoint
        "eval --load " + bad + " --device cpu",                            // checkpoint
        "--data " + bad + train,                                           // shard
        "--val-data " + bad + data + " --steps 1 --val-every 1" + TINY,   // shard
        "eval --load " + ckpt + " --data " + bad + " --batch 4 --seq 8 --device cpu",  // shard
        "--tokenizer " + bad + data + train,                               // tokenizer
        "sample --load " + ckpt + " --tokenizer " + bad,                   // tokenizer
    };
    if (have_gnuplot()) cmds.push_back("plot " + bad + " -o " + d + "/loss.png");  // log
    return cmds;
}

TEST_CASE("a FIFO as checkpoint, shard, tokenizer or log is refused, not waited on") {
    std::string d = scratch("ti_fifo");
    make_valid_inputs(d);
    std::string fifo = d + "/pipe";
    REQUIRE(mkfifo(fifo.c_str(), 0644) == 0);
    for (const std::string& cmd : bad_input_commands(d, fifo)) {
        INFO("args: ", cmd);
        expect_error(run_limited(cmd), {fifo + ": cannot open", "is not a regular file (it is a FIFO)"});
    }
    CHECK_FALSE(exists(d + "/loss.png"));
}

TEST_CASE("a directory as checkpoint, shard, tokenizer or log is refused by name") {
    std::string d = scratch("ti_dir");
    make_valid_inputs(d);
    std::string dir = d + "/folder";
    fs::create_directories(dir);
    for (const std::string& cmd : bad_input_commands(d, dir)) {
        INFO("args: ", cmd);
        expect_error(run_limited(cmd), {dir + ": cannot open", "is a directory"});
    }
    CHECK_FALSE(exists(d + "/loss.png"));
}

// ---------------------------------------------------------------- prepare

// Every file under dir (relative name -> contents).
static std::map<std::string, std::string> snapshot(const std::string& dir) {
    std::map<std::string, std::string> m;
    for (const auto& e : fs::recursive_directory_iterator(dir))
        m[fs::relative(e.path(), dir).string()] = e.is_regular_file() ? slurp(e.path().string()) : "<dir>";
    return m;
}

static std::vector<std::string> names_in(const std::string& dir) {
    std::vector<std::string> v;
    for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
    std::sort(v.begin(), v.end());
    return v;
}

TEST_CASE("prepare: a run that fails halfway leaves the old data set as it was") {
    std::string d = scratch("ti_prepare");
    std::string text, other;
    for (int i = 0; i < 80; i++) text += "Line " + std::to_string(i) + ": the quick brown fox jumps over the lazy dog.\n";
    for (int i = 0; i < 80; i++) other += "Verse " + std::to_string(i) + ": what light through yonder window breaks?\n";
    write_bytes(d + "/old.txt", text);
    write_bytes(d + "/new.txt", other);
    write_bytes(d + "/tiny.txt", "hi\n");
    std::string out = d + "/out", prep = prepare_path() + " --out " + out;
    Run first = run_cmd(prep + " --vocab 280 " + d + "/old.txt");
    INFO(first.out);
    REQUIRE(first.rc == 0);
    write_bytes(out + "/notes.txt", "the user's own file\n");  // not prepare's: must survive every run
    const std::map<std::string, std::string> before = snapshot(out);
    REQUIRE(before.count("tokenizer.bin"));
    REQUIRE(before.count("manifest.txt"));
    REQUIRE(before.count("old_train_000000.bin"));
    const std::vector<std::string> scratch_names = {"new.txt", "old.txt", "out", "tiny.txt"};

    SUBCASE("the text is too short for a validation split") {
        Run r = run_cmd(prep + " --vocab 300 " + d + "/tiny.txt");
        expect_error(r, {"validation split came out empty"});
    }
    SUBCASE("the disk fills up after the tokenizer, at the first shard") {
        // a file size limit of 512 bytes (SIGXFSZ ignored, so writes fail with
        // EFBIG as on a full disk): the tokenizer (16 + 8 * 33 bytes) fits, a
        // shard (1024-byte header) does not
        Run r = run_cmd("trap '' XFSZ; ulimit -f 1; " + prep + " --vocab 290 " + d + "/new.txt");
        expect_error(r, {"new_train_000000.bin", "write failed"});
    }
    CHECK(snapshot(out) == before);            // byte for byte, nothing added or removed
    CHECK(names_in(d) == scratch_names);       // no temporary folder left beside it

    SUBCASE("and a run that succeeds replaces the data set whole, keeping other files") {
        Run r = run_cmd(prep + " --vocab 290 " + d + "/new.txt");
        INFO(r.out);
        REQUIRE(r.rc == 0);
        std::vector<std::string> expect = {"manifest.txt", "new_train_000000.bin", "new_val_000000.bin", "notes.txt",
                                           "tokenizer.bin"};
        CHECK(names_in(out) == expect);
        CHECK(slurp(out + "/notes.txt") == "the user's own file\n");
        CHECK(slurp(out + "/tokenizer.bin") != before.at("tokenizer.bin"));
        CHECK(names_in(d) == scratch_names);
    }
}

TEST_CASE("prepare: Ctrl-C, SIGTERM or SIGHUP while the data set is built removes its folder, the old one stays") {
    std::string d = scratch("ti_prepare_signal");
    std::string small, big;
    for (int i = 0; i < 80; i++) small += "Line " + std::to_string(i) + ": the quick brown fox jumps over the lazy dog.\n";
    // enough text that the encoding and the writes take a while (about 1 s)
    for (int i = 0; big.size() < (12u << 20); i++)
        big += "Verse " + std::to_string(i) + ": what light through yonder window breaks, " + std::to_string(i * 7919 % 10007) + "?\n";
    write_bytes(d + "/old.txt", small);
    write_bytes(d + "/big.txt", big);
    std::string out = d + "/out";
    Run first = run_cmd(prepare_path() + " --out " + out + " --vocab 280 " + d + "/old.txt");
    INFO(first.out);
    REQUIRE(first.rc == 0);
    const std::vector<std::string> scratch_names = {"big.txt", "old.txt", "out"};
    // The signal once killed prepare on the spot and left out.tmp-<pid>
    // beside the output, the half-built data set. The signal must come while
    // that folder exists: the run watches for it; a run that finishes before
    // the watcher sees it is tried again (another vocabulary: no cache hit).
    int vocab = 300;
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
        bool signalled = false;
        for (int attempt = 0; attempt < 5 && !signalled; attempt++, vocab++) {
            const std::map<std::string, std::string> before = snapshot(out);
            pid_t pid = spawn_cmd("exec " + prepare_path() + " --out " + out + " --vocab " + std::to_string(vocab) + " " +
                                      d + "/big.txt",
                                  "build/ti_prepare_signal.out");
            int status = 0;
            bool done = false;
            while (!signalled && !done) {
                if (exists(out + ".tmp-" + std::to_string(pid))) signalled = kill(pid, sig) == 0;
                if (!signalled) done = waitpid(pid, &status, WNOHANG) == pid;
                if (!signalled && !done) usleep(1000);
            }
            if (!signalled) continue;  // finished first: try again
            Exit e = wait_exit(pid);
            std::string text = slurp("build/ti_prepare_signal.out");
            INFO("signal ", sig, ": ", text);
            CHECK(e.exited);  // handled, not killed by the signal
            CHECK(e.code == 128 + sig);
            CHECK(text.find("prepare: interrupted (") != std::string::npos);
            CHECK(names_in(d) == scratch_names);  // no temporary folder left beside the output
            CHECK(snapshot(out) == before);       // the old data set, byte for byte
        }
        CHECK_MESSAGE(signalled, "prepare finished before its staging folder was seen, 5 times");
    }
}

TEST_CASE("prepare: --name is a file name in --out: '/', '.', '..' and an empty name are refused") {
    std::string d = scratch("ti_prepare_name");
    std::string text;
    for (int i = 0; i < 80; i++) text += "Line " + std::to_string(i) + ": the quick brown fox jumps over the lazy dog.\n";
    write_bytes(d + "/in.txt", text);
    // --name ../esc once wrote d/esc_train_000000.bin beside --out d/out,
    // outside the data set's all-or-nothing swap; --name '' took the default
    struct Case {
        std::string name, why;
    };
    for (const Case& c : {Case{"../esc", "may not contain '/'"}, Case{"sub/esc", "may not contain '/'"},
                          Case{"/abs", "may not contain '/'"}, Case{"..", "not a name"}, Case{".", "not a name"},
                          Case{"", "--name '': give a name"}}) {
        Run r = run_cmd(prepare_path() + " --vocab 280 --out " + d + "/out --name " + sh_quote(c.name) + " " + d + "/in.txt");
        INFO("--name ", c.name);
        expect_error(r, {c.why});
        std::vector<std::string> only = {"in.txt"};
        CHECK(names_in(d) == only);
    }
    Run ok = run_cmd(prepare_path() + " --vocab 280 --out " + d + "/out --name 'my..name' " + d + "/in.txt");
    INFO(ok.out);
    CHECK(ok.rc == 0);
    CHECK(exists(d + "/out/my..name_train_000000.bin"));
}

TEST_CASE("prepare: an output folder that resolves to / is refused before any work") {
    std::string d = scratch("ti_prepare_root");
    fs::create_directory_symlink("/", d + "/root");
    fs::create_directory_symlink("../ti_prepare_root/root", d + "/via");  // a link to the link
    // a text too short for a validation split: prepare stops at the split
    // (before it builds anything) unless the guard stops it first. The guard
    // once looked at the name only, so --out d/root went on as far as the text
    // allowed, toward building the data set beside / and moving / into it.
    write_bytes(d + "/tiny.txt", "hi\n");
    for (const std::string& out : {d + "/root", d + "/root/", d + "/via", d + "/root/tmp/.."}) {
        Run r = run_cmd(prepare_path() + " --vocab 280 --out " + out + " " + d + "/tiny.txt");
        INFO("--out ", out);
        expect_error(r, {"output folder '" + out + "'", "give"});
        CHECK(r.out.find("validation split") == std::string::npos);
    }
}

// ---------------------------------------------------------------- token ids

TEST_CASE("a bad token id in a later shard stops the run at the start, naming the shard") {
    std::string d = scratch("ti_ids");
    std::vector<uint16_t> good(200), bad(200);
    for (size_t i = 0; i < good.size(); i++) good[i] = bad[i] = uint16_t(i * 5 % 64);
    bad[123] = 200;  // >= --vocab 64
    write_raw_shard(d + "/a_000.bin", good);
    write_raw_shard(d + "/b_001.bin", bad);
    std::string all = "'" + d + "/*.bin'";

    // training data: sequential, so shard b comes only after ~6 steps on a
    Run r = run_limited("--data " + all + " --shuffle 0 --steps 20 --val-every 0" + std::string(TINY));
    expect_error(r, {d + "/b_001.bin: token 200 at position 123 is >= vocab size 64"});
    CHECK(r.out.find("| loss ") == std::string::npos);  // not one step was taken

    // validation data: 1 batch per validation never reaches shard b
    Run v = run_limited("--data " + d + "/a_000.bin --val-data " + all + " --steps 2 --val-every 1" + std::string(TINY));
    expect_error(v, {d + "/b_001.bin: token 200 at position 123 is >= vocab size 64"});
    CHECK(v.out.find("| loss ") == std::string::npos);
    CHECK(v.out.find("val loss") == std::string::npos);
}

// ---------------------------------------------------------------- names with glob characters

TEST_CASE("--data: a file whose name holds glob characters is that file, not what the pattern matches") {
    std::string d = scratch("ti_glob");
    fs::create_directories(d + "/gl[1]");
    fs::create_directories(d + "/gl1");
    std::vector<uint16_t> good(600), bad(600);
    for (size_t i = 0; i < good.size(); i++) good[i] = bad[i] = uint16_t(i * 7 % 64);
    bad[5] = 200;  // >= --vocab 64: a run that reads this file stops
    write_raw_shard(d + "/gl[1]/a.bin", good);
    write_raw_shard(d + "/gl1/a.bin", bad);
    // 'gl[1]/a.bin' once trained on gl1/a.bin, the file the pattern matches
    Run r = run("--data " + sh_quote(d + "/gl[1]/a.bin") + " --steps 1 --val-every 0" + std::string(TINY));
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(r.out.find("gl1/a.bin") == std::string::npos);
}

TEST_CASE("prepare: the shard patterns it prints find its shards, whatever glob characters the names hold") {
    std::string d = scratch("ti_prepare_glob");
    std::string text;
    for (int i = 0; i < 80; i++) text += "Line " + std::to_string(i) + ": the quick brown fox jumps over the lazy dog.\n";
    write_bytes(d + "/play[1].txt", text);
    write_bytes(d + "/play1.txt", text);  // what play[1] matches as a pattern
    // an output folder of such a name too, and a decoy beside it that [1] matches
    std::string out = d + "/o[1]";
    Run decoy = run_cmd(prepare_path() + " --vocab 280 --out " + d + "/o1 " + d + "/play1.txt");
    REQUIRE(decoy.rc == 0);
    Run p = run_cmd(prepare_path() + " --vocab 280 --out " + sh_quote(out) + " " + sh_quote(d + "/play[1].txt"));
    INFO(p.out);
    REQUIRE(p.rc == 0);
    // prepare once printed o[1]/play[1]_train_*.bin: as a pattern it matches
    // o1/play1_train_... only, so train_mot found no shards
    auto line = [&](const std::string& key) {
        size_t at = p.out.find("\n" + key + ": ");
        REQUIRE(at != std::string::npos);
        at += key.size() + 3;
        return p.out.substr(at, p.out.find('\n', at) - at);
    };
    std::string train = line("train"), val = line("val");
    CHECK(glob_files(train) == std::vector<std::string>{out + "/play[1]_train_000000.bin"});
    CHECK(glob_files(val) == std::vector<std::string>{out + "/play[1]_val_000000.bin"});
    Run r = run("--data " + sh_quote(train) + " --val-data " + sh_quote(val) + " --tokenizer " +
                sh_quote(out + "/tokenizer.bin") +
                " --layers 1 --heads 1 --d-model 16 --ffn dense --batch 4 --seq 8 --val-batches 1 --sample-every 0"
                " --device cpu --steps 1 --val-every 1");
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(r.out.find("val loss") != std::string::npos);
}

TEST_CASE("prepare: an output folder that is a symlink stays one, its target gets the new data set") {
    std::string d = scratch("ti_prepare_link");
    std::string text;
    for (int i = 0; i < 80; i++) text += "Line " + std::to_string(i) + ": the quick brown fox jumps over the lazy dog.\n";
    write_bytes(d + "/in.txt", text);
    fs::create_directories(d + "/real");
    fs::create_directory_symlink("real", d + "/link");
    std::string prep = prepare_path() + " --out " + d + "/link " + d + "/in.txt";
    for (const char* vocab : {" --vocab 280", " --vocab 290"}) {  // a new data set, then a different one over it
        Run r = run_cmd(prep + vocab);
        INFO(r.out);
        REQUIRE(r.rc == 0);
        CHECK(fs::is_symlink(d + "/link"));
        std::vector<std::string> expect = {"in_train_000000.bin", "in_val_000000.bin", "manifest.txt", "tokenizer.bin"};
        CHECK(names_in(d + "/real") == expect);
        std::vector<std::string> top = {"in.txt", "link", "real"};
        CHECK(names_in(d) == top);
    }
}

TEST_CASE("prepare: an output folder of another user keeps its owner, group and mode" *
          doctest::skip(geteuid() != 0) * doctest::description("needs root, to give a folder to another user")) {
    // the swap put a new folder in its place, owned by whoever ran prepare
    // (root): the folder's owner and group were lost
    std::string d = scratch("ti_prepare_owner");
    std::string text;
    for (int i = 0; i < 80; i++) text += "Line " + std::to_string(i) + ": the quick brown fox jumps over the lazy dog.\n";
    write_bytes(d + "/in.txt", text);
    std::string out = d + "/out";
    for (const char* where : {"out", "link"}) {  // the folder itself, and through a symlink to it
        fs::remove_all(out);
        fs::remove(d + "/link");
        fs::create_directories(out);
        write_bytes(out + "/notes.txt", "the user's own file\n");
        REQUIRE(chown(out.c_str(), 65534, 65534) == 0);
        REQUIRE(chmod(out.c_str(), 02750) == 0);
        fs::create_directory_symlink("out", d + "/link");
        INFO("--out ", where);
        for (const char* vocab : {" --vocab 280", " --vocab 290"}) {  // a new data set, then one over it
            Run r = run_cmd(prepare_path() + " --out " + d + "/" + where + vocab + " " + d + "/in.txt");
            INFO(r.out);
            REQUIRE(r.rc == 0);
            struct stat after;
            REQUIRE(stat(out.c_str(), &after) == 0);
            CHECK(after.st_uid == 65534u);
            CHECK(after.st_gid == 65534u);
            CHECK((after.st_mode & 07777) == 02750u);
            CHECK(slurp(out + "/notes.txt") == "the user's own file\n");
        }
    }
    // run by a user who cannot give the new folder that owner (the folder and its parent writable by
    // anyone, so the swap itself goes through: the folder became that user's): refused before the
    // slow part, everything left as it was
    if (std::system("command -v setpriv > /dev/null 2>&1") != 0) return;
    fs::remove_all(d + "/link");
    fs::remove_all(out);
    fs::create_directories(out);
    write_bytes(out + "/notes.txt", "the user's own file\n");
    REQUIRE(chown(out.c_str(), 65533, 65533) == 0);
    REQUIRE(chmod(out.c_str(), 0777) == 0);
    REQUIRE(chmod(d.c_str(), 0777) == 0);
    char* program = realpath(prepare_path().c_str(), nullptr);
    REQUIRE(program);
    Run r = run_cmd("setpriv --reuid 65534 --regid 65534 --clear-groups " + std::string(program) + " --out " + out +
                    " --vocab 280 " + d + "/in.txt");
    std::free(program);
    expect_error(r, {out + ": the output folder belongs to user 65533, group 65533, mode 0777",
                     "run prepare as the folder's owner, or give another --out"});
    CHECK(r.out.find("prepare: in:") == std::string::npos);  // nothing built
    struct stat after;
    REQUIRE(stat(out.c_str(), &after) == 0);
    CHECK(after.st_uid == 65533u);
    CHECK(names_in(out) == std::vector<std::string>{"notes.txt"});
    CHECK(names_in(d) == std::vector<std::string>{"in.txt", "out"});  // no folder left beside it
}

// ---------------------------------------------------------------- get_tinyshakespeare.sh

TEST_CASE("get_tinyshakespeare.sh: a symlink planted at the download's temporary name is not written through") {
    // the script in a scratch tree of its own, with a curl on PATH that
    // "downloads" the right number of bytes
    std::string d = scratch("ti_get");
    fs::create_directories(d + "/data");
    fs::create_directories(d + "/bin");
    fs::copy_file("data/get_tinyshakespeare.sh", d + "/data/get_tinyshakespeare.sh");
    write_bytes(d + "/bin/curl",
                "#!/bin/sh\n"
                "while [ $# -gt 0 ]; do [ \"$1\" = -o ] && out=$2; shift; done\n"
                "head -c 1115394 /dev/zero | tr '\\000' a > \"$out\"\n");
    fs::permissions(d + "/bin/curl", fs::perms::owner_all);
    write_bytes(d + "/victim.txt", "the victim's own bytes\n");
    // the download once went to data/tinyshakespeare.txt.tmp, through a
    // symlink there into its target, and the symlink was then moved into place
    fs::create_symlink("../victim.txt", d + "/data/tinyshakespeare.txt.tmp");
    Run r = run_cmd("env -u MOT_DATA PATH=" + sh_quote(fs::absolute(d + "/bin").string()) + ":\"$PATH\" sh " + d +
                    "/data/get_tinyshakespeare.sh");
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(slurp(d + "/victim.txt") == "the victim's own bytes\n");
    CHECK_FALSE(fs::is_symlink(d + "/data/tinyshakespeare.txt"));
    CHECK(slurp(d + "/data/tinyshakespeare.txt") == std::string(1115394, 'a'));
    std::vector<std::string> left = {"get_tinyshakespeare.sh", "tinyshakespeare.txt", "tinyshakespeare.txt.tmp"};
    CHECK(names_in(d + "/data") == left);  // the planted link stays, no temporary of the script's
}

TEST_CASE("get_tinyshakespeare.sh: MOT_DATA names where the text goes and where it is looked for") {
    // as common/data_path.h: only the MOT_DATA folder, taken from the caller's folder
    std::string d = fs::absolute(scratch("ti_get_data")).string();
    fs::create_directories(d + "/tree/data");
    fs::create_directories(d + "/bin");
    fs::copy_file("data/get_tinyshakespeare.sh", d + "/tree/data/get_tinyshakespeare.sh");
    write_bytes(d + "/bin/curl",
                "#!/bin/sh\n"
                "while [ $# -gt 0 ]; do [ \"$1\" = -o ] && out=$2; shift; done\n"
                "head -c 1115394 /dev/zero | tr '\\000' a > \"$out\"\n");
    fs::permissions(d + "/bin/curl", fs::perms::owner_all);
    std::string get = "cd " + sh_quote(d) + " && PATH=" + sh_quote(d + "/bin") + ":\"$PATH\" MOT_DATA=mine sh tree/data/get_tinyshakespeare.sh";
    Run r = run_cmd(get);
    INFO(r.out);
    CHECK(r.rc == 0);
    CHECK(slurp(d + "/mine/tinyshakespeare.txt") == std::string(1115394, 'a'));
    CHECK_FALSE(fs::exists(d + "/tree/data/tinyshakespeare.txt"));
    // there already: nothing is fetched (this curl would fail)
    write_bytes(d + "/bin/curl", "#!/bin/sh\nexit 7\n");
    Run again = run_cmd(get);
    INFO(again.out);
    CHECK(again.rc == 0);
    CHECK(again.out.find("already at " + d + "/mine/tinyshakespeare.txt") != std::string::npos);
}

// ---------------------------------------------------------------- make reproduce

TEST_CASE("make reproduce: TEXT is a path, never a command") {
    if (!exists("Makefile") || std::system("command -v make > /dev/null 2>&1") != 0) {
        MESSAGE("no make or no Makefile here: make reproduce test skipped");
        return;
    }
    std::string d = scratch("ti_make");
    // Each TEXT once ran something: the recipe put it in the shell command
    // unquoted (TEXT=$(TEXT)), so `;` ended the assignment and ran the rest,
    // `$(shell ...)` ran in make, and a space split the path into a command.
    // Now reproduce.sh gets it whole and refuses it at once: no such file.
    // The programs are taken as they are (-o): the script stops before using
    // them. MAKEFLAGS of an enclosing make test would hand this make its jobs.
    const std::vector<std::string> texts = {
        d + "/x; touch " + d + "/semicolon; false",
        d + "/$(shell touch " + d + "/make_shell) `touch " + d + "/backquote` $(touch " + d + "/dollar).txt",
        d + "/Romeo's text 'quoted'.txt",
        d + "/no such file.txt",
    };
    for (const std::string& text : texts) {
        Run r = run_cmd("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -o train_mot -o prepare -o build/study reproduce TEXT=" +
                        sh_quote(text));
        INFO("TEXT=", text, "\n", r.out);
        CHECK(r.rc != 0);
        CHECK(r.out.find("reproduce: TEXT=" + text + ": no such file or folder") != std::string::npos);
    }
    std::vector<std::string> none;
    CHECK(names_in(d) == none);  // nothing touched
}
