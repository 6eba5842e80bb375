#!/usr/bin/env bash
# Checks deploy/ (the Dockerfile and the Kubernetes manifests) without a container engine or
# a cluster, and fails on any mismatch:
#   (a) every YAML document of deploy/kubernetes parses; kinds, namespace, headless Service,
#       probes on the ConfigMap's metrics port, membership.dns naming the Service, security
#       context, and where the config, the secret copy and the Secret are mounted
#       (scripts/check_deploy.py);
#   (b) `kubectl kustomize deploy/kubernetes` builds the same objects, when kubectl is
#       installed (it runs offline; `kubectl apply --dry-run=client` needs a server, so it is
#       not used);
#   (c) the Dockerfile: known instructions, FROM first, a non-root numeric USER in the final
#       stage, the binary copied from the build stage, and the CMD's --config path where the
#       Deployment mounts the ConfigMap (scripts/check_deploy.py);
#   (d) the secret-sync container's script copies a Secret-like file (mode 0440, as the
#       kubelet leaves it with fsGroup, which herald refuses) into a 0600 copy, follows an
#       update, and stops on SIGTERM; `herald check` accepts the ConfigMap's herald.toml with
#       that copy beside it. As root with setpriv, both run as UID 10001 like the pod.
#
# Usage: scripts/check-deploy.sh [HERALD_BINARY]   (default: target/debug/herald)
# Needs python3 with PyYAML (Debian: python3-yaml); kubectl is optional.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
herald=${1:-target/debug/herald}
case $herald in /*) ;; *) herald="$root/$herald" ;; esac
[ -x "$herald" ] || { echo "check-deploy: no herald binary at $herald (cargo build first, or pass its path)"; exit 1; }

py=""
for candidate in python3 /usr/bin/python3; do
  if "$candidate" -c 'import yaml, tomllib' 2>/dev/null; then py=$candidate; break; fi
done
[ -n "$py" ] || { echo "check-deploy: needs python3 (3.11+) with PyYAML: apt-get install python3-yaml"; exit 1; }

work=$(mktemp -d)
sync_pid=""
cleanup() {
  if [ -n "$sync_pid" ]; then kill "$sync_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
failed=0
passed=0
ok() { passed=$((passed + 1)); }
bad() { echo "check-deploy: $*"; failed=$((failed + 1)); }

# (b) kubectl kustomize, offline, when kubectl is there.
kustomized=""
if command -v kubectl >/dev/null 2>&1; then
  if kubectl kustomize deploy/kubernetes >"$work/kustomized.yaml" 2>"$work/kustomize.err"; then
    kustomized="$work/kustomized.yaml"
    ok
  else
    bad "kubectl kustomize deploy/kubernetes failed: $(cat "$work/kustomize.err")"
  fi
else
  echo "check-deploy: kubectl not installed: skipping kubectl kustomize"
fi

# (a) and (c): the static checks; they also extract what (d) needs.
"$py" scripts/check_deploy.py "$root" "$work" $kustomized || true
if [ -f "$work/static-counts" ]; then
  read -r p f <"$work/static-counts"
  passed=$((passed + p)) failed=$((failed + f))
else
  bad "scripts/check_deploy.py stopped before the end (error above)"
fi
for f in herald.toml secret-name config-name sync.sh sync.env; do
  [ -f "$work/$f" ] || { echo "check-deploy: the static checks extracted no $f; cannot go on"; exit 1; }
done

# (d) secret-sync and herald check, as in the pod: the Secret's files in src/ (0440, owned by
# root and group 10001 when we are root), the emptyDir in etc/ with the config in it.
as_pod=()
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1; then
  as_pod=(setpriv --reuid 10001 --regid 10001 --clear-groups)
  echo "check-deploy: running secret-sync and herald check as UID 10001, GID 10001"
else
  echo "check-deploy: not root (or no setpriv): running secret-sync and herald check as $(id -u)"
fi
secret_name=$(cat "$work/secret-name")
config_name=$(cat "$work/config-name")
case $secret_name in
  */*)
    bad "secret_file $secret_name is not a plain file name beside the config; skipping the rest"
    echo "check-deploy: $passed passed, $failed failed"
    exit 1
    ;;
esac
src="$work/src"
dst="$work/etc"
mkdir -p "$src" "$dst"
"$herald" keygen "$src/$secret_name" >/dev/null
chmod 0440 "$src/$secret_name"
cp "$work/herald.toml" "$dst/$config_name"
if [ ${#as_pod[@]} -gt 0 ]; then
  # UID 10001 may not reach the binary where it was built (under /root, say): a copy it can.
  install -m 0755 "$herald" "$work/herald"
  herald="$work/herald"
  chmod 0755 "$work"
  chown 0:10001 "$src" "$src/$secret_name"
  chmod 0750 "$src"
  chown 10001:10001 "$dst"
fi

# secret-sync itself, with the environment of the manifest but these directories and a short
# interval.
env_args=()
while IFS= read -r line; do env_args+=("$line"); done <"$work/sync.env"
env_args+=("SRC_DIR=$src" "DST_DIR=$dst" "INTERVAL_S=0.2")
if ! sh -n "$work/sync.sh"; then
  bad "the secret-sync script is not valid sh"
fi
"${as_pod[@]}" env "${env_args[@]}" sh -c "$(cat "$work/sync.sh")" >"$work/sync.log" 2>&1 &
sync_pid=$!
wait_for() { # condition as a command; up to 5 s
  for _ in $(seq 50); do "$@" && return 0; sleep 0.1; done
  return 1
}
if wait_for test -s "$dst/$secret_name"; then
  ok
  mode=$(stat -c %a "$dst/$secret_name")
  [ "$mode" = 600 ] && ok || bad "secret-sync's copy has mode $mode, not 600"
  if [ ${#as_pod[@]} -gt 0 ]; then
    owner=$(stat -c %u "$dst/$secret_name")
    [ "$owner" = 10001 ] && ok || bad "secret-sync's copy belongs to UID $owner, not 10001"
  fi
  cmp -s "$src/$secret_name" "$dst/$secret_name" && ok || bad "secret-sync's copy differs from the Secret"
else
  bad "secret-sync made no copy of $secret_name within 5 s: $(cat "$work/sync.log")"
fi

# herald check of the ConfigMap's config, with the copy beside it: valid, and the secret
# found and loaded (not "missing", which check also accepts since node would create one).
if "${as_pod[@]}" "$herald" check --json --config "$dst/$config_name" >"$work/check.json" 2>&1 \
  && grep -q '"valid":true' "$work/check.json" && grep -q '"state":"ok"' "$work/check.json"; then
  ok
else
  bad "herald check refused the ConfigMap's herald.toml: $(cat "$work/check.json")"
  "${as_pod[@]}" "$herald" check --config "$dst/$config_name" || true
fi

# The Secret volume's file as it is, beside the same config: herald must refuse it, which is
# why the copy exists. If herald ever accepts it, the sidecar can go.
raw="$work/raw"
mkdir "$raw"
cp "$work/herald.toml" "$raw/$config_name"
cp -p "$src/$secret_name" "$raw/$secret_name"
[ ${#as_pod[@]} -gt 0 ] && chown 10001:10001 "$raw"
if "${as_pod[@]}" "$herald" check --config "$raw/$config_name" >"$work/refused.out" 2>&1; then
  bad "herald check accepted a mode 0440 secret file; deploy/kubernetes copies it for nothing"
elif grep -q 'accessible to group or others' "$work/refused.out"; then
  ok
else
  bad "herald check refused the 0440 secret file, but not for its mode: $(cat "$work/refused.out")"
fi

# A Secret update, the way the kubelet makes one (a new file in place of the old): the copy
# follows as a new file (new inode), which is what a running node's file watch reloads.
before=$(stat -c %i "$dst/$secret_name" 2>/dev/null || echo none)
cp -p "$src/$secret_name" "$work/rotated"
chmod 0600 "$work/rotated"
"$herald" keygen --add-key "$work/rotated" >/dev/null
chmod 0440 "$work/rotated"
[ ${#as_pod[@]} -gt 0 ] && chown 0:10001 "$work/rotated"
mv -f "$work/rotated" "$src/$secret_name"
if wait_for cmp -s "$src/$secret_name" "$dst/$secret_name"; then
  ok
  after=$(stat -c %i "$dst/$secret_name")
  [ "$before" != "$after" ] && ok || bad "secret-sync rewrote the copy in place: a reader could see half a file"
  "$herald" keygen --fingerprint "$dst/$secret_name" | grep -q 'key id 2 ' && ok \
    || bad "the copy after the update does not hold key 2"
else
  bad "secret-sync did not copy the updated Secret within 5 s: $(cat "$work/sync.log")"
fi

# SIGTERM, as at the end of the pod: it exits at once (0), not after the grace period.
kill -TERM "$sync_pid"
status=0
for _ in $(seq 20); do kill -0 "$sync_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$sync_pid" 2>/dev/null; then
  bad "secret-sync still runs 2 s after SIGTERM"
else
  wait "$sync_pid" || status=$?
  [ "$status" = 0 ] && ok || bad "secret-sync exited $status on SIGTERM, not 0"
fi
sync_pid=""

echo "check-deploy: $passed passed, $failed failed"
[ "$failed" = 0 ] || { echo "check-deploy: FAILED"; exit 1; }
echo "check-deploy: deploy/ is consistent"
