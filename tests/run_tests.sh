#!/usr/bin/env bash
# Runs every test binary given, shows its output, and ends with one line
# "N passed, N failed, N skipped" counted over all doctest test cases.
# Exits non-zero when any suite fails.
set -u
passed=0; failed=0; skipped=0; status=0
for t in "$@"; do
    echo "== $t"
    out=$("$t" 2>&1); rc=$?
    echo "$out" | grep -v '^\[doctest\] doctest version' | tail -n 30
    line=$(echo "$out" | grep '^\[doctest\] test cases:' | tail -n 1)
    if [ -z "$line" ]; then
        echo "$t: no doctest summary (crashed?)"; failed=$((failed + 1)); status=1; continue
    fi
    p=$(echo "$line" | sed -E 's/.*\| *([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/.*\| *([0-9]+) failed.*/\1/')
    s=$(echo "$line" | sed -E 's/.*\| *([0-9]+) skipped.*/\1/')
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    [ "$rc" -ne 0 ] && status=1
done
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
