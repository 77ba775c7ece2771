#!/bin/sh
# Check that every file of the library calls only files in lower layers.
#   tools/layers.sh OBJDIR [LAYERS_FILE]
# OBJDIR holds one NAME.o per src/NAME.c; LAYERS_FILE (default src/README.md)
# holds the table as lines "layer N: name name ..." inside a ```layers block.
# For each object, every setcache__ symbol it uses (nm -u) is looked up among
# the symbols the objects define (nm --defined-only); using one defined in a
# file of the same or a higher layer is an error, and so is an object the
# table does not name. Exit 0 when clean, 1 on a violation, 2 on bad input.
set -u
objdir=${1:?usage: tools/layers.sh OBJDIR [LAYERS_FILE]}
table=${2:-$(dirname "$0")/../src/README.md}
[ -d "$objdir" ] && [ -f "$table" ] || { echo "layers: no $objdir or $table" >&2; exit 2; }
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
awk '/^```layers/{on=1; next} /^```/{on=0} on && $1 == "layer" {
        n = $2; sub(":", "", n); for (i = 3; i <= NF; i++) print $i, n }' "$table" > "$tmp/layer"
[ -s "$tmp/layer" ] || { echo "layers: no layer table in $table" >&2; exit 2; }
status=0
for o in "$objdir"/*.o; do
    f=$(basename "$o" .o)
    grep -q "^$f " "$tmp/layer" || { echo "layers: $f.c is in no layer of $table"; status=1; }
    nm --defined-only "$o" | awk -v f="$f" '$3 ~ /^setcache__/ && $2 ~ /[A-Z]/ {print $3, f}' >> "$tmp/def"
    nm -u "$o" | awk -v f="$f" '$2 ~ /^setcache__/ {print f, $2}' >> "$tmp/use"
done
[ -f "$tmp/use" ] || : > "$tmp/use"
[ -f "$tmp/def" ] || : > "$tmp/def"
awk 'FILENAME == ARGV[1] { layer[$1] = $2; next }
     FILENAME == ARGV[2] { owner[$1] = $2; next }
     {
        user = $1; sym = $2; def = owner[sym]
        if (def == "" || !(user in layer) || !(def in layer)) next
        if (layer[def] >= layer[user]) {
            printf "layers: %s.c (layer %d) calls %s of %s.c (layer %d): only lower layers may be called\n",
                   user, layer[user], sym, def, layer[def]
            bad = 1
        }
     }
     END { exit bad }' "$tmp/layer" "$tmp/def" "$tmp/use" || status=1
[ $status = 0 ] && echo "layers: $(wc -l < "$tmp/layer") files, every call goes to a lower layer"
exit $status
