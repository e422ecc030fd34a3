// Reading JSONL: one JSON object per line, as in train_mot's --log (written
// by train/log.h, docs/design.md section 10) and the study's results.json.
// The readers of those files (the log's resume, plot, the study, the tests)
// all parse through here.
//
// A row's values are numbers, strings, true, false and null; an object or
// an array inside a row is refused, as no file here holds one. A malformed
// line is an error naming the file, the line and the column. A last line
// without its newline may be a row still being written (a run that is
// going, or one killed mid-write): jsonl_parse_text and jsonl_read leave
// it out unless it is a whole object.
#pragma once
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fileio.h"

struct JsonValue {
    enum Kind { NUMBER, STRING, BOOLEAN, NUL };
    Kind kind = NUL;
    double number = 0;  // NUMBER: the value (strtod of text); BOOLEAN: 1 or 0
    std::string text;   // NUMBER: as written ("2.5e-05"); STRING: decoded; else "true", "false" or "null"
};

// One line's object: key -> value.
typedef std::map<std::string, JsonValue> JsonRow;

// The number under key in row; false when the key is absent or its value
// is null, a string or a boolean.
inline bool json_number(const JsonRow& row, const std::string& key, double* out) {
    auto it = row.find(key);
    if (it == row.end() || it->second.kind != JsonValue::NUMBER) return false;
    *out = it->second.number;
    return true;
}

// The parser's position in one line; err is set by the first error.
struct JsonCursor {
    const std::string& s;
    size_t i = 0;
    std::string err;
};

inline bool json_error(JsonCursor* c, const std::string& what) {
    if (c->err.empty()) c->err = strf("%s (column %zu)", what.c_str(), c->i + 1);
    return false;
}

// JSON's whitespace: space, tab, CR and LF (a line given with its newline)
inline void json_skip_space(JsonCursor* c) {
    while (c->i < c->s.size() && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\r' || c->s[c->i] == '\n'))
        c->i++;
}

// What the cursor is at, for messages: a character, or the end of the line.
inline std::string json_here(const JsonCursor* c) {
    if (c->i >= c->s.size()) return "the end of the line";
    unsigned char ch = (unsigned char)c->s[c->i];
    return ch >= 0x20 && ch < 0x7f ? strf("'%c'", ch) : strf("byte 0x%02x", (unsigned)ch);
}

inline int json_hex4(JsonCursor* c) {
    if (c->i + 4 > c->s.size()) return -1;
    int v = 0;
    for (int k = 0; k < 4; k++) {
        char h = c->s[c->i + k];
        int d = h >= '0' && h <= '9'   ? h - '0'
                : h >= 'a' && h <= 'f' ? h - 'a' + 10
                : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    c->i += 4;
    return v;
}

inline void json_append_utf8(std::string* out, unsigned cp) {
    if (cp < 0x80) {
        *out += (char)cp;
    } else if (cp < 0x800) {
        *out += (char)(0xc0 | (cp >> 6));
        *out += (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *out += (char)(0xe0 | (cp >> 12));
        *out += (char)(0x80 | ((cp >> 6) & 0x3f));
        *out += (char)(0x80 | (cp & 0x3f));
    } else {
        *out += (char)(0xf0 | (cp >> 18));
        *out += (char)(0x80 | ((cp >> 12) & 0x3f));
        *out += (char)(0x80 | ((cp >> 6) & 0x3f));
        *out += (char)(0x80 | (cp & 0x3f));
    }
}

// A string from its opening quote; its escapes decoded (\uXXXX, surrogate
// pairs included, as UTF-8). Other bytes are taken as they are.
inline bool json_string(JsonCursor* c, std::string* out) {
    const std::string& s = c->s;
    size_t start = c->i++;
    out->clear();
    while (c->i < s.size() && s[c->i] != '"') {
        unsigned char ch = (unsigned char)s[c->i];
        if (ch < 0x20)
            return json_error(c, strf("byte 0x%02x inside a string (control characters are escaped in JSON)", ch));
        if (ch != '\\') {
            *out += (char)ch;
            c->i++;
            continue;
        }
        if (++c->i >= s.size()) break;
        char e = s[c->i++];
        switch (e) {
            case '"': *out += '"'; break;
            case '\\': *out += '\\'; break;
            case '/': *out += '/'; break;
            case 'b': *out += '\b'; break;
            case 'f': *out += '\f'; break;
            case 'n': *out += '\n'; break;
            case 'r': *out += '\r'; break;
            case 't': *out += '\t'; break;
            case 'u': {
                int cp = json_hex4(c);
                if (cp < 0) return json_error(c, "\\u is not followed by 4 hex digits");
                if (cp >= 0xdc00 && cp <= 0xdfff)
                    return json_error(c, strf("\\u%04x: a low surrogate without its high one", cp));
                if (cp >= 0xd800 && cp <= 0xdbff) {  // a high surrogate: its low one must follow, as \uDC00-\uDFFF
                    int lo = -1;
                    if (s.compare(c->i, 2, "\\u") == 0) {
                        c->i += 2;
                        lo = json_hex4(c);
                    }
                    if (lo < 0xdc00 || lo > 0xdfff)
                        return json_error(c, strf("\\u%04x: a high surrogate without its low one", cp));
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                json_append_utf8(out, (unsigned)cp);
                break;
            }
            default:
                c->i--;
                return json_error(c, strf("\\%c is not a JSON escape", e));
        }
    }
    if (c->i >= s.size()) {
        c->i = start;
        return json_error(c, "a string that does not end");
    }
    c->i++;  // the closing quote
    return true;
}

// A number as JSON writes one: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
inline bool json_number_text(JsonCursor* c, JsonValue* v) {
    const std::string& s = c->s;
    size_t start = c->i;
    auto digits = [&]() {
        size_t b = c->i;
        while (c->i < s.size() && s[c->i] >= '0' && s[c->i] <= '9') c->i++;
        return c->i - b;
    };
    if (s[c->i] == '-') c->i++;
    if (c->i < s.size() && s[c->i] == '0') c->i++;
    else if (digits() == 0) return json_error(c, "a number without digits");
    if (c->i < s.size() && s[c->i] == '.') {
        c->i++;
        if (digits() == 0) return json_error(c, "a number with no digit after its '.'");
    }
    if (c->i < s.size() && (s[c->i] == 'e' || s[c->i] == 'E')) {
        c->i++;
        if (c->i < s.size() && (s[c->i] == '+' || s[c->i] == '-')) c->i++;
        if (digits() == 0) return json_error(c, "a number with no digit in its exponent");
    }
    v->kind = JsonValue::NUMBER;
    v->text = s.substr(start, c->i - start);
    v->number = std::strtod(v->text.c_str(), nullptr);
    return true;
}

inline bool json_value(JsonCursor* c, JsonValue* v) {
    const std::string& s = c->s;
    if (c->i >= s.size()) return json_error(c, "a value is missing at the end of the line");
    char ch = s[c->i];
    if (ch == '"') {
        v->kind = JsonValue::STRING;
        return json_string(c, &v->text);
    }
    if (ch == '-' || (ch >= '0' && ch <= '9')) return json_number_text(c, v);
    for (const char* word : {"true", "false", "null"})
        if (s.compare(c->i, std::string(word).size(), word) == 0) {
            v->kind = word[0] == 'n' ? JsonValue::NUL : JsonValue::BOOLEAN;
            v->number = word[0] == 't' ? 1 : 0;
            v->text = word;
            c->i += v->text.size();
            return true;
        }
    if (ch == '{' || ch == '[')
        return json_error(c, strf("a nested %s (a row holds numbers, strings, true, false and null)",
                                  ch == '{' ? "object" : "array"));
    return json_error(c, "expected a value (a number, a string, true, false or null), found " + json_here(c));
}

// Parses one line holding one JSON object into *row. Returns false, with
// *error saying what is wrong and at which column, when it is not one.
inline bool json_parse_row(const std::string& line, JsonRow* row, std::string* error) {
    JsonCursor c{line, 0, ""};
    row->clear();
    auto parse = [&]() {
        json_skip_space(&c);
        if (c.i >= line.size() || line[c.i] != '{')
            return json_error(&c, "expected '{' (a row is one JSON object), found " + json_here(&c));
        c.i++;
        json_skip_space(&c);
        if (c.i < line.size() && line[c.i] == '}') {
            c.i++;
            return true;
        }
        for (;;) {
            json_skip_space(&c);
            if (c.i >= line.size() || line[c.i] != '"')
                return json_error(&c, "expected a key in quotes, found " + json_here(&c));
            size_t key_at = c.i;
            std::string key;
            if (!json_string(&c, &key)) return false;
            json_skip_space(&c);
            if (c.i >= line.size() || line[c.i] != ':')
                return json_error(&c, strf("expected ':' after the key \"%s\", found %s", key.c_str(),
                                           json_here(&c).c_str()));
            c.i++;
            json_skip_space(&c);
            JsonValue v;
            if (!json_value(&c, &v)) return false;
            if (row->count(key)) {
                c.i = key_at;
                return json_error(&c, strf("the key \"%s\" appears a second time", key.c_str()));
            }
            (*row)[key] = v;
            json_skip_space(&c);
            if (c.i < line.size() && line[c.i] == ',') {
                c.i++;
                continue;
            }
            if (c.i < line.size() && line[c.i] == '}') {
                c.i++;
                return true;
            }
            return json_error(&c, strf("expected ',' or '}' after the value of \"%s\", found %s", key.c_str(),
                                       json_here(&c).c_str()));
        }
    };
    if (parse()) {
        json_skip_space(&c);
        if (c.i == line.size()) return true;
        json_error(&c, "text after the object's '}'");
    }
    row->clear();
    *error = c.err;
    return false;
}

// One line of a named file as a row; fails naming the file and the line
// (counted from 1) when it is malformed.
inline JsonRow jsonl_parse(const std::string& line, const std::string& file, size_t line_number) {
    JsonRow row;
    std::string error;
    if (!json_parse_row(line, &row, &error))
        fail(strf("%s line %zu: not a JSON object: %s", file.c_str(), line_number, error.c_str()));
    return row;
}

// The lines of text, without their newlines. A last line that lacks its
// newline is not among them: it goes to *torn ("" when there is none).
inline std::vector<std::string> text_lines(const std::string& text, std::string* torn = nullptr) {
    std::vector<std::string> lines;
    size_t pos = 0;
    for (size_t nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1)
        lines.push_back(text.substr(pos, nl - pos));
    if (torn) *torn = text.substr(pos);
    return lines;
}

// The rows of JSONL text read from file (named in messages), in order;
// blank lines are left out. Fails naming the file and the line at a
// malformed line. A last line without its newline is kept when it is a
// whole object and left out when it is not: a row still being written
// (a write of ours ends in its newline, so a whole object is a whole row).
inline std::vector<JsonRow> jsonl_parse_text(const std::string& text, const std::string& file) {
    std::string torn;
    std::vector<std::string> lines = text_lines(text, &torn);
    std::vector<JsonRow> rows;
    for (size_t i = 0; i < lines.size(); i++)
        if (lines[i].find_first_not_of(" \t\r\n") != std::string::npos)
            rows.push_back(jsonl_parse(lines[i], file, i + 1));
    JsonRow last;
    std::string error;
    if (json_parse_row(torn, &last, &error)) rows.push_back(last);
    return rows;
}

// The rows of the JSONL file at path (what: its role, for messages), as
// jsonl_parse_text reads them.
inline std::vector<JsonRow> jsonl_read(const std::string& path, const char* what = "log") {
    return jsonl_parse_text(read_file(path, what), path);
}
