#!/usr/bin/env bash
# Runs the walkthrough of docs/operations.md ("Three nodes on one machine, step by step")
# command by command, as a newcomer would copy it, and checks that it shows what the text
# promises. CI runs it so the walkthrough cannot rot. The only change: the debug build
# (which the tests have built already) instead of the release build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

script=$(awk '
  /^## Three nodes on one machine/ { inside = 1; next }
  /^## / { inside = 0 }
  inside && /^```sh$/ { code = 1; next }
  inside && /^```$/ { code = 0; next }
  inside && code { print }
' docs/operations.md)
[ -n "$script" ] || { echo "walkthrough: no sh blocks found in docs/operations.md"; exit 1; }
script=${script//cargo build --release/cargo build}
script=${script//target\/release/target\/debug}

rm -rf /tmp/herald-three
out=$(mktemp)
trap 'pkill -f "herald node --config n[0-9]/herald.toml" || true; rm -rf /tmp/herald-three "$out"' EXIT
# The walkthrough stops its nodes at the end, as the text after it says.
if ! bash -e -c "$script"$'\nkill $nodes; wait' >"$out" 2>&1; then
  cat "$out"
  echo "walkthrough: a command failed (output above)"
  exit 1
fi

fail=0
expect() {
  if ! grep -qE -- "$1" "$out"; then
    echo "walkthrough: expected output matching '$1' ($2)"
    fail=1
  fi
}
expect '^udp +127\.0\.0\.1:7702 +[0-9]+ +alive' "status shows node 2 alive"
expect '^udp +127\.0\.0\.1:7703 +[0-9]+ +alive' "status shows node 3 alive"
expect 'node [0-9]+ product\.changed "42"' "tail on node 2 prints the raised event"
expect '^acknowledged by node [0-9]+ \(127\.0\.0\.1:770[23]\), node [0-9]+ \(127\.0\.0\.1:770[23]\)' "raise names both acknowledging peers"
expect '^keys: ok' "/readyz answers"
expect '^herald_peers\{state="alive"\} 2' "metrics count two live peers"
expect '^udp +127\.0\.0\.1:7704 +- +rejected .*bad_tag' "the node with another secret shows as rejected"
expect 'hint: the sender signs with another secret' "with the hint"
if [ "$fail" != 0 ]; then
  cat "$out"
  exit 1
fi
echo "walkthrough: every step showed what docs/operations.md says"
