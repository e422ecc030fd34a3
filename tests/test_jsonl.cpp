// The JSONL reader (common/jsonl.h) that every reader of the training log
// goes through (the log's resume, plot, the study, the suites): rows as
// train/log.h writes them, read back value for value; JSON's numbers and
// string escapes; malformed lines refused with the file, the line and the
// column; a missing or null field; a torn last line.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "common/jsonl.h"
#include "tests/bad_input.h"
#include "train/log.h"

static JsonRow parse(const std::string& line) { return jsonl_parse(line, "runs/x.jsonl", 7); }

TEST_CASE("numbers in every form JSON writes them, kept as written and as values") {
    JsonRow row = parse("{\"step\": 12, \"a\": -3, \"b\": 0.5, \"c\": -0.0, \"d\": 1e-30, \"e\": 2.5E+20, \"f\": 7e3, "
                        "\"g\": 0.00300000003, \"h\": 1.5e-05, \"big\": 1e999}");
    CHECK(row.size() == 10);
    struct Want {
        const char* key;
        const char* text;
        double value;
    };
    for (Want w : {Want{"step", "12", 12}, {"a", "-3", -3}, {"b", "0.5", 0.5}, {"c", "-0.0", -0.0},
                   {"d", "1e-30", 1e-30}, {"e", "2.5E+20", 2.5e20}, {"f", "7e3", 7000}, {"g", "0.00300000003", 0.00300000003},
                   {"h", "1.5e-05", 1.5e-05}}) {
        INFO(w.key);
        REQUIRE(row.count(w.key));
        CHECK(row[w.key].kind == JsonValue::NUMBER);
        CHECK(row[w.key].text == w.text);
        double x = NAN;
        CHECK(json_number(row, w.key, &x));
        CHECK(x == w.value);  // strtod's own value: exact
    }
    CHECK(std::signbit(row["c"].number));
    double big = 0;
    CHECK(json_number(row, "big", &big));
    CHECK(std::isinf(big));  // beyond a double, as strtod reads it
}

TEST_CASE("strings with their escapes, true, false, null; spaces anywhere JSON allows them") {
    JsonRow row = parse(" \t{ \"s\" : \"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\" , \"u\": \"\\u00e9\\u20ac\\ud83d\\ude00\\u0041\","
                        " \"raw\": \"caf\xc3\xa9\", \"t\": true, \"f\": false, \"n\": null, \"empty\": \"\", "
                        "\"key \\\"quoted\\\"\": 1 }  \r\n");
    CHECK(row["s"].kind == JsonValue::STRING);
    CHECK(row["s"].text == "a\"b\\c/d\be\ff\ng\rh\ti");
    CHECK(row["u"].text == "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80" "A");  // UTF-8 of U+00E9, U+20AC, U+1F600, A
    CHECK(row["raw"].text == "caf\xc3\xa9");                            // bytes as they are
    CHECK(row["t"].kind == JsonValue::BOOLEAN);
    CHECK(row["t"].text == "true");
    CHECK(row["f"].kind == JsonValue::BOOLEAN);
    CHECK(row["f"].text == "false");
    CHECK(row["n"].kind == JsonValue::NUL);
    CHECK(row["n"].text == "null");
    CHECK(row["empty"].kind == JsonValue::STRING);
    CHECK(row["empty"].text.empty());
    CHECK(row.count("key \"quoted\"") == 1);
    CHECK(parse("{}").empty());
    CHECK(parse("{ }").empty());
}

TEST_CASE("a missing field, a null one and a string are no number") {
    JsonRow row = parse("{\"step\": 3, \"loss\": null, \"name\": \"4.5\", \"ok\": true}");
    double x = 42;
    CHECK_FALSE(json_number(row, "val_loss", &x));  // absent
    CHECK_FALSE(json_number(row, "loss", &x));      // null: a non-finite value in the log
    CHECK_FALSE(json_number(row, "name", &x));      // a string, even one that reads as a number
    CHECK_FALSE(json_number(row, "ok", &x));
    CHECK(x == 42);  // left as it was
    CHECK(json_number(row, "step", &x));
    CHECK(x == 3);
}

TEST_CASE("a malformed line is refused, naming the file, the line and what is wrong where") {
    struct Bad {
        std::string line;
        std::vector<std::string> needles;
    };
    std::vector<Bad> bad = {
        {"", {"expected '{'", "the end of the line", "column 1"}},
        {"[1, 2]", {"expected '{'", "'['", "column 1"}},
        {"step 3", {"expected '{'", "'s'"}},
        {"{", {"expected a key in quotes", "the end of the line", "column 2"}},
        {"{step: 3}", {"expected a key in quotes", "'s'", "column 2"}},
        {"{\"step\" 3}", {"expected ':' after the key \"step\"", "'3'", "column 9"}},
        {"{\"step\": }", {"expected a value", "'}'", "column 10"}},
        {"{\"step\":", {"a value is missing"}},
        {"{\"a\": 1,}", {"expected a key in quotes", "'}'", "column 9"}},
        {"{\"a\": 1 \"b\": 2}", {"expected ',' or '}' after the value of \"a\"", "'\"'", "column 9"}},
        {"{\"a\": 1", {"expected ',' or '}'", "the end of the line"}},
        {"{\"a\": 01}", {"after the value of \"a\"", "'1'", "column 8"}},  // no leading zeros
        {"{\"a\": 1.}", {"no digit after its '.'"}},
        {"{\"a\": .5}", {"expected a value", "'.'"}},
        {"{\"a\": 1e}", {"no digit in its exponent"}},
        {"{\"a\": 1e+}", {"no digit in its exponent"}},
        {"{\"a\": -}", {"a number without digits"}},
        {"{\"a\": +1}", {"expected a value", "'+'"}},
        {"{\"a\": nan}", {"expected a value", "'n'"}},
        {"{\"a\": inf}", {"expected a value", "'i'"}},
        {"{\"a\": NULL}", {"expected a value", "'N'"}},
        {"{\"a\": \"x}", {"a string that does not end", "column 7"}},
        {"{\"a\": \"x\\qy\"}", {"\\q is not a JSON escape", "column 10"}},
        {"{\"a\": \"\\u12g4\"}", {"\\u is not followed by 4 hex digits"}},
        {"{\"a\": \"\\ud83d\"}", {"\\ud83d: a high surrogate without its low one"}},
        {"{\"a\": \"\\ud83d\\u0041\"}", {"a high surrogate without its low one"}},
        {"{\"a\": \"\\ude00\"}", {"\\ude00: a low surrogate without its high one"}},
        {"{\"a\": \"tab\there\"}", {"byte 0x09 inside a string"}},
        {"{\"a\": {\"b\": 1}}", {"a nested object"}},
        {"{\"a\": [1]}", {"a nested array"}},
        {"{\"a\": 1} x", {"text after the object's '}'", "column 10"}},
        {"{\"a\": 1}{\"b\": 2}", {"text after the object's '}'"}},
        {"{\"a\": 1, \"a\": 2}", {"the key \"a\" appears a second time", "column 10"}},
        {"{\"a\": 1\x01}", {"byte 0x01"}},
    };
    for (const Bad& b : bad) {
        INFO("line: ", b.line);
        std::vector<std::string> needles = b.needles;
        needles.insert(needles.begin(), "runs/x.jsonl line 7: not a JSON object: ");
        expect_throw([&] { parse(b.line); }, needles);
        JsonRow row = {{"left", JsonValue()}};
        std::string error;
        CHECK_FALSE(json_parse_row(b.line, &row, &error));
        CHECK(row.empty());  // nothing half-parsed
        CHECK(!error.empty());
    }
}

TEST_CASE("a file's lines: numbered from 1 with blank ones counted, a torn last line left out") {
    std::string good = "{\"step\": 1, \"loss\": 3}\n\n{\"step\": 2, \"loss\": 2.5}\n";
    std::vector<JsonRow> rows = jsonl_parse_text(good, "a.jsonl");
    REQUIRE(rows.size() == 2);  // the blank line is not a row
    CHECK(rows[1].at("loss").text == "2.5");
    // a row being written when the file was read: cut mid-number, mid-key, after its last value
    for (const char* torn : {"{\"step\": 3, \"loss\": 2.", "{\"step\": 3, \"lo", "{\"step\": 3, \"loss\": 2.25", "{"})
        CHECK(jsonl_parse_text(good + torn, "a.jsonl").size() == 2);
    // a whole object without its newline is a row
    std::vector<JsonRow> whole = jsonl_parse_text(good + "{\"step\": 3}", "a.jsonl");
    REQUIRE(whole.size() == 3);
    CHECK(whole[2].at("step").number == 3);
    // the line number counts every line, blank ones included
    expect_throw([&] { jsonl_parse_text(good + "{\"step\": 3, \"loss\" 1}\n{\"step\": 4}\n", "runs/a.jsonl"); },
                 {"runs/a.jsonl line 4: not a JSON object: expected ':' after the key \"loss\""});
    std::string torn;
    std::vector<std::string> lines = text_lines("a\n\nb\nc", &torn);
    CHECK(lines == std::vector<std::string>{"a", "", "b"});
    CHECK(torn == "c");
    text_lines("a\n", &torn);
    CHECK(torn.empty());
    expect_throw([] { jsonl_read("build/no_such_log.jsonl"); }, {"build/no_such_log.jsonl"});
}

// What train/log.h writes, the reader reads back: every number exactly
// (%.9g of a float-valued double is that double), a non-finite one as null.
TEST_CASE("the log's rows read back value for value") {
    std::string path = "build/test_jsonl_" + std::to_string(getpid()) + ".jsonl";
    JsonlLog log;
    jsonl_open(&log, path, false);
    const float lr = 0.003f, tiny = 1.17549435e-38f;
    jsonl_write(&log, 0, {{"params", 17326464}, {"peak_lr", lr}});
    jsonl_write(&log, 1, {{"loss", 7.62171833}, {"lr", tiny}, {"grad_norm", NAN}, {"ms", INFINITY}, {"dropped_1", 0.25}});
    jsonl_write(&log, 1, {{"val_loss", -1e-300}});
    jsonl_close(&log);
    std::vector<JsonRow> rows = jsonl_read(path);
    std::remove(path.c_str());
    REQUIRE(rows.size() == 3);
    double x = 0;
    CHECK((json_number(rows[0], "step", &x) && x == 0));
    CHECK((json_number(rows[0], "params", &x) && x == 17326464));
    CHECK((json_number(rows[0], "peak_lr", &x) && (float)x == lr));
    CHECK((json_number(rows[1], "loss", &x) && x == 7.62171833));
    CHECK((json_number(rows[1], "lr", &x) && (float)x == tiny));
    CHECK(rows[1].at("grad_norm").kind == JsonValue::NUL);
    CHECK(rows[1].at("ms").kind == JsonValue::NUL);
    CHECK(rows[1].at("dropped_1").text == "0.25");
    CHECK(rows[2].at("val_loss").text == "-1e-300");
}

// The log's resume (jsonl_open) reads the old rows through the reader:
// the train rows up to the checkpoint's step and the validation rows
// before it are kept as they were written; the others, a line that is no
// row and a torn last line are dropped.
TEST_CASE("resuming the log keeps the rows up to the checkpoint, as written") {
    std::string path = "build/test_jsonl_resume_" + std::to_string(getpid()) + ".jsonl";
    const std::string head = "{\"step\": 0, \"params\": 10}\n{\"step\": 0, \"val_loss\": 5.5}\n{\"step\": 1, \"loss\": 5.25e+00}\n"
                             "{\"step\": 2, \"loss\": 5}\n";
    write_file_atomic(path, head + "{\"step\": 2, \"val_loss\": 4.75}\nnot a row\n{\"step\": 3, \"loss\": 4}\n{\"step\": 4, \"lo");
    JsonlLog log;
    jsonl_open(&log, path, true, 2);
    jsonl_write(&log, 2, {{"val_loss", 4.5}});
    jsonl_close(&log);
    std::string text = read_file(path);
    std::remove(path.c_str());
    CHECK(text == head + "{\"step\": 2, \"val_loss\": 4.5}\n");
}
