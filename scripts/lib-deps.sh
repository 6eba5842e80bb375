#!/bin/sh
# The library without the CLI's weight (issue 21): with default features off, none of the
# `herald` command's dependencies may be in the library's tree. Run from the repository root.
set -eu
cli='clap|indicatif|tracing-subscriber|tempfile|signal-hook|hdrhistogram|serde_json|hyper|hyper-util|http-body-util'
found=$(cargo tree -e normal --no-default-features --prefix none --format '{p}' |
    grep -E "^($cli) " | sort -u || true)
if [ -n "$found" ]; then
    echo "the library (--no-default-features) depends on what only the CLI needs:" >&2
    echo "$found" >&2
    exit 1
fi
echo "ok: the library's tree holds none of: $cli"
