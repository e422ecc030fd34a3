#!/bin/sh
# Downloads tinyshakespeare (Karpathy's char-rnn data set, 1115394 bytes) to
# data/tinyshakespeare.txt, or into the folder MOT_DATA names when it is set,
# where ./prepare and ./train_mot look for it (common/data_path.h).
# Needs curl or wget and internet access, unless the text is already in a
# folder they search (MOT_DATA; else data/, then ../shared/data).
set -eu
# MOT_DATA relative to where the script was started, as for the programs
if [ -n "${MOT_DATA:-}" ]; then
    case $MOT_DATA in /*) ;; *) MOT_DATA="$PWD/$MOT_DATA" ;; esac
fi
cd "$(dirname "$0")/.."
url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
if [ -n "${MOT_DATA:-}" ]; then set -- "$MOT_DATA"; else set -- data ../shared/data; fi
dest="$1/tinyshakespeare.txt"
expected=1115394
for dir in "$@"; do
    have="$dir/tinyshakespeare.txt"
    if [ -f "$have" ] && [ "$(wc -c < "$have" | tr -d ' ')" = "$expected" ]; then
        echo "tinyshakespeare is already at $have; nothing to fetch"
        exit 0
    fi
done
mkdir -p "$(dirname "$dest")"
# a new file of a name of its own (mktemp creates it, O_EXCL): a file or
# symlink planted at a fixed name is never written through
tmp=$(mktemp "$dest.tmp.XXXXXX")
trap 'rm -f "$tmp"' EXIT
if command -v curl >/dev/null 2>&1; then
    curl -fL --retry 3 -o "$tmp" "$url"
elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$tmp" "$url"
else
    echo "error: need curl or wget to download $url" >&2
    exit 1
fi
size=$(wc -c < "$tmp" | tr -d ' ')
if [ "$size" != "$expected" ]; then
    echo "error: downloaded $size bytes from $url, expected $expected" >&2
    exit 1
fi
chmod 644 "$tmp"  # mktemp made it private
mv "$tmp" "$dest"
echo "wrote $dest ($size bytes)"
