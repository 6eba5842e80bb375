"""Static checks of deploy/: the Kubernetes manifests and the Dockerfile agree with each other
and with what herald needs. scripts/check-deploy.sh runs this, then the checks that need the
herald binary.

Usage: check_deploy.py REPO_ROOT WORK_DIR [KUSTOMIZED_YAML]

Writes into WORK_DIR what the shell script uses next:
  static-counts       the checks passed and failed, as two numbers
  herald.toml         the ConfigMap's herald.toml, byte for byte
  config-name         the file name herald is started with (the CMD's --config, basename)
  secret-name         the config's secret_file, relative to the config's directory
  sync.sh, sync.env   the secret-sync container's script and its environment (NAME=VALUE)
Exit 1 with one line per problem.
"""

import json
import os
import re
import sys
import tomllib

import yaml

ROOT, WORK = sys.argv[1], sys.argv[2]
KUSTOMIZED = sys.argv[3] if len(sys.argv) > 3 else None
K8S = os.path.join(ROOT, "deploy", "kubernetes")
DOCKERFILE = os.path.join(ROOT, "deploy", "Dockerfile")

problems = []
passed = 0


def check(ok, where, problem):
    """Counts a check; records the problem when it fails. Returns ok."""
    global passed
    if ok:
        passed += 1
    else:
        problems.append(f"{where}: {problem}")
    return bool(ok)


def fail(where, problem):
    check(False, where, problem)


def get(obj, *path, default=None):
    for p in path:
        if isinstance(obj, dict) and p in obj:
            obj = obj[p]
        elif isinstance(obj, list) and isinstance(p, int) and p < len(obj):
            obj = obj[p]
        else:
            return default
    return obj


def host_port(text):
    """'host:port' or '[v6]:port' -> (host, port), or None."""
    m = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d+)", text or "")
    return (m.group(1), int(m.group(2))) if m else None


# --- (a) the Kubernetes manifests ---------------------------------------------------------

KNOWN_KINDS = {"Namespace", "ConfigMap", "Service", "Deployment", "Kustomization"}
docs = []  # (file, doc)
files = sorted(f for f in os.listdir(K8S) if f.endswith((".yaml", ".yml")))
check(files, "deploy/kubernetes", "no YAML files")
for name in files:
    where = f"deploy/kubernetes/{name}"
    try:
        with open(os.path.join(K8S, name)) as f:
            loaded = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        fail(where, f"not valid YAML: {e}")
        continue
    check(loaded, where, "holds no YAML document")
    for d in loaded:
        if not check(isinstance(d, dict), where, "a document that is not a mapping"):
            continue
        kind = d.get("kind")
        check(kind in KNOWN_KINDS, where, f"kind {kind!r} is none of {sorted(KNOWN_KINDS)}")
        check(d.get("apiVersion"), where, f"{kind}: no apiVersion")
        if kind != "Kustomization":
            check(get(d, "metadata", "name"), where, f"{kind}: no metadata.name")
        docs.append((name, d))


def one(kind):
    found = [(f, d) for f, d in docs if d.get("kind") == kind]
    check(len(found) == 1, "deploy/kubernetes", f"{len(found)} {kind} objects, expected one")
    return found[0] if found else (None, {})


cm_file, cm = one("ConfigMap")
svc_file, svc = one("Service")
dep_file, dep = one("Deployment")
kz_file, kz = one("Kustomization")
ns_docs = [d for _, d in docs if d.get("kind") == "Namespace"]

# Every object in one namespace, the Namespace object's if there is one.
namespaces = {get(d, "metadata", "namespace") for _, d in docs if d.get("kind") in
              ("ConfigMap", "Service", "Deployment")}
check(len(namespaces) == 1 and None not in namespaces, "deploy/kubernetes",
      f"ConfigMap, Service and Deployment must name one namespace, they name {sorted(map(str, namespaces))}")
namespace = next(iter(namespaces)) if len(namespaces) == 1 else None
for d in ns_docs:
    check(get(d, "metadata", "name") == namespace, "deploy/kubernetes",
          f"Namespace {get(d, 'metadata', 'name')!r} is not the objects' namespace {namespace!r}")

# The kustomization lists every other file, and no missing one.
if kz:
    listed = set(kz.get("resources") or [])
    others = {f for f in files if f != kz_file}
    check(listed == others, f"deploy/kubernetes/{kz_file}",
          f"resources {sorted(listed)} are not the directory's manifests {sorted(others)}")

# The ConfigMap's herald.toml.
config = {}
toml_text = get(cm, "data", "herald.toml")
if check(isinstance(toml_text, str), f"deploy/kubernetes/{cm_file}", "no data key herald.toml"):
    try:
        config = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as e:
        fail(f"deploy/kubernetes/{cm_file}", f"herald.toml is not valid TOML: {e}")
    with open(os.path.join(WORK, "herald.toml"), "w") as f:
        f.write(toml_text)
CMW = f"deploy/kubernetes/{cm_file} (herald.toml)"
metrics = host_port(get(config, "metrics", "listen"))
check(metrics, CMW, "no [metrics] listen: the probes need /healthz and /readyz")
check(not metrics or metrics[0] not in ("127.0.0.1", "::1", "localhost"), CMW,
      "metrics.listen is a loopback address: the kubelet probes the pod's address")
udp = host_port(get(config, "udp", "bind"))
check(udp, CMW, "no udp.bind: membership needs UDP")
dns = get(config, "membership", "dns")
check(dns, CMW, "no membership.dns: the nodes find each other through the headless Service")
secret_name = config.get("secret_file", "herald.secret")
check(not os.path.isabs(secret_name), CMW,
      f"secret_file {secret_name!r} should be relative, beside the config in the pod's emptyDir")
with open(os.path.join(WORK, "secret-name"), "w") as f:
    f.write(secret_name)

# The Service: headless, publishing pods before they are ready, and the name in the config.
SW = f"deploy/kubernetes/{svc_file}"
spec = svc.get("spec") or {}
check(spec.get("clusterIP") == "None", SW, "not headless: set clusterIP: None")
check(spec.get("publishNotReadyAddresses") is True, SW,
      "publishNotReadyAddresses must be true: nodes must find each other before they are ready")
svc_udp = [p for p in spec.get("ports") or [] if p.get("protocol") == "UDP"]
check(svc_udp, SW, "no UDP port")
if dns and udp:
    parsed = host_port(dns)
    if check(parsed, CMW, f"membership.dns {dns!r} is not host:port"):
        host, port = parsed
        labels = host.rstrip(".").split(".")
        name = get(svc, "metadata", "name")
        want = f"{name}.{namespace}.svc.cluster.local"
        check(labels[0] == name and (len(labels) == 1 or labels[1] == namespace)
              and (len(labels) <= 2 or host.rstrip(".") in (f"{name}.{namespace}.svc", want)),
              CMW, f"membership.dns host {host!r} is not the Service {want}")
        check(port == udp[1], CMW,
              f"membership.dns port {port} is not udp.bind's port {udp[1]} (every node listens there)")
        check(any(p.get("port") == port for p in svc_udp), SW,
              f"no UDP port {port}, the one membership.dns names")

# The Deployment.
DW = f"deploy/kubernetes/{dep_file}"
pod = get(dep, "spec", "template", "spec", default={})
labels = get(dep, "spec", "template", "metadata", "labels", default={})
check(get(dep, "spec", "replicas") == 3, DW, "replicas should be 3")
check(get(dep, "spec", "selector", "matchLabels", default={}).items() <= labels.items(), DW,
      "spec.selector does not select the pod template's labels")
selector = spec.get("selector") or {}
check(selector and selector.items() <= labels.items(), SW,
      f"selector {selector} does not select the Deployment's pods {labels}")
containers = {c.get("name"): c for c in pod.get("containers") or []}
inits = {c.get("name"): c for c in pod.get("initContainers") or []}
herald = containers.get("herald")
check(herald, DW, "no container named herald")
herald = herald or {}
sc = pod.get("securityContext") or {}
check(sc.get("runAsNonRoot") is True, DW, "pod securityContext: runAsNonRoot must be true")
check(isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] != 0, DW,
      "pod securityContext: runAsUser must be a non-zero UID")
for c in list(containers.values()) + list(inits.values()):
    csc = c.get("securityContext") or {}
    check(csc.get("readOnlyRootFilesystem") is True, DW,
          f"container {c.get('name')}: readOnlyRootFilesystem must be true")
    check(csc.get("allowPrivilegeEscalation") is False, DW,
          f"container {c.get('name')}: allowPrivilegeEscalation must be false")
    check(get(c, "securityContext", "runAsUser", default=1) != 0, DW,
          f"container {c.get('name')}: runs as root")


def port_number(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    fail(DW, f"container {container.get('name')}: no port named {port!r}")
    return None


for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
    got = get(herald, probe, "httpGet")
    if check(got, DW, f"herald: no {probe} with httpGet"):
        check(got.get("path") == path, DW, f"herald: {probe} path {got.get('path')!r}, expected {path}")
        number = port_number(herald, got.get("port"))
        check(metrics and number == metrics[1], DW,
              f"herald: {probe} port {got.get('port')!r} ({number}) is not metrics.listen's port "
              f"{metrics[1] if metrics else None}")
ports = {(p.get("containerPort"), p.get("protocol", "TCP")) for p in herald.get("ports") or []}
check(not udp or (udp[1], "UDP") in ports, DW, f"herald: no UDP containerPort {udp and udp[1]}")
linger_ms = get(config, "recovery", "linger_ms", default=1000)
grace = pod.get("terminationGracePeriodSeconds", 30)
check(grace * 1000 >= linger_ms + 2000, DW,
      f"terminationGracePeriodSeconds {grace} leaves herald less than recovery.linger_ms "
      f"({linger_ms} ms) plus 2 s to flush and say goodbye")

# Volumes: where the config, the secret copy and the Secret itself are.
volumes = {v.get("name"): v for v in pod.get("volumes") or []}
cm_name = get(cm, "metadata", "name")


def mounts_of(container, kind):
    return [m for m in container.get("volumeMounts") or []
            if kind in (volumes.get(m.get("name")) or {})]


config_mounts = [m for m in mounts_of(herald, "configMap")
                 if get(volumes[m["name"]], "configMap", "name") == cm_name]
check(len(config_mounts) == 1, DW, f"herald: the ConfigMap {cm_name} is mounted {len(config_mounts)} times, expected once")
config_paths = set()
for m in config_mounts:
    if m.get("subPath"):
        check(m["subPath"] in (cm.get("data") or {}), DW, f"subPath {m['subPath']!r} is no key of the ConfigMap")
        config_paths.add(m["mountPath"].rstrip("/"))
    else:
        config_paths.add(m["mountPath"].rstrip("/") + "/herald.toml")
check(not mounts_of(herald, "secret"), DW,
      "herald mounts a Secret volume itself: its files are not owner-only (see the comment at the top)")
sync = inits.get("secret-sync") or {}
if check(sync, DW, "no init container secret-sync"):
    check(sync.get("restartPolicy") == "Always", DW,
          "secret-sync: restartPolicy must be Always (a native sidecar that follows Secret updates)")
    check(sync.get("image") == herald.get("image"), DW,
          "secret-sync must use herald's image (its shell and coreutils copy the secret)")
    secret_mounts = mounts_of(sync, "secret")
    check(len(secret_mounts) == 1 and not secret_mounts[0].get("subPath"), DW,
          "secret-sync: mount the Secret volume once, as a directory (a subPath misses updates)")
    check(sc.get("fsGroup") == sc.get("runAsUser") or sc.get("fsGroup") == sc.get("runAsGroup"),
          DW, "pod securityContext: fsGroup must be the user's group, or secret-sync cannot read the Secret")
    env = {e.get("name"): e.get("value") for e in sync.get("env") or []}
    script = (sync.get("args") or [None])[-1]
    check(sync.get("command") == ["/bin/sh", "-c"] and isinstance(script, str), DW,
          "secret-sync: expected command [/bin/sh, -c] and the script as its argument")
    check(secret_mounts and env.get("SRC_DIR") == secret_mounts[0].get("mountPath"), DW,
          "secret-sync: SRC_DIR is not where the Secret is mounted")
    # The copy lands where herald looks: the same emptyDir, at secret_file beside the config.
    dst_vol = [m.get("name") for m in sync.get("volumeMounts") or []
               if m.get("mountPath") == env.get("DST_DIR")]
    herald_dirs = {m.get("mountPath"): m.get("name") for m in herald.get("volumeMounts") or []}
    for path in config_paths:
        secret_path = os.path.normpath(os.path.join(os.path.dirname(path), secret_name))
        check(dst_vol and "emptyDir" in (volumes.get(dst_vol[0]) or {})
              and herald_dirs.get(os.path.dirname(secret_path)) == dst_vol[0], DW,
              f"herald reads the secret at {secret_path}, which is not in the emptyDir secret-sync copies to ({env.get('DST_DIR')})")
        probe = get(sync, "startupProbe", "exec", "command", default=[])
        check(probe[-1:] == [os.path.join(env.get("DST_DIR") or "", os.path.basename(secret_path))], DW,
              "secret-sync: its startupProbe must wait for the copied secret, so herald never starts without it (it would create a new one)")
    if isinstance(script, str):
        with open(os.path.join(WORK, "sync.sh"), "w") as f:
            f.write(script)
        with open(os.path.join(WORK, "sync.env"), "w") as f:
            for k, v in env.items():
                f.write(f"{k}={v}\n")

# What kubectl kustomize made of the directory: the same objects.
if KUSTOMIZED:
    with open(KUSTOMIZED) as f:
        built = [d for d in yaml.safe_load_all(f) if d]
    want = sorted((d["kind"], get(d, "metadata", "name")) for _, d in docs if d["kind"] != "Kustomization")
    got = sorted((d.get("kind"), get(d, "metadata", "name")) for d in built)
    check(got == want, "kubectl kustomize deploy/kubernetes", f"built {got}, expected {want}")

# --- (c) the Dockerfile -------------------------------------------------------------------

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
                "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
XW = "deploy/Dockerfile"
lines = []  # (line number, instruction, arguments)
with open(DOCKERFILE) as f:
    pending, start = "", 0
    for n, raw in enumerate(f, 1):
        line = raw.rstrip("\n")
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        words = (pending + line).strip().split(None, 1)
        lines.append((start, words[0].upper(), words[1] if len(words) > 1 else ""))
        pending = ""
    check(not pending, XW, "ends inside a continued line")
for n, ins, _ in lines:
    check(ins in INSTRUCTIONS, XW, f"line {n}: unknown instruction {ins}")
first = next((i for i, (_, ins, _) in enumerate(lines) if ins != "ARG"), None)
check(first is not None and lines[first][1] == "FROM", XW,
      "must start with FROM (only ARG may come before it)")

stages = []  # {"name", "image", "lines"}
for n, ins, args in lines:
    if ins == "FROM":
        m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
        check(m, XW, f"line {n}: FROM {args!r}")
        stages.append({"image": m.group(1) if m else args, "name": m and m.group(2), "lines": []})
    elif stages:
        stages[-1]["lines"].append((n, ins, args))
check(len(stages) >= 2, XW, "not multi-stage: build in one stage, copy the binary into a small one")
final = stages[-1] if stages else {"lines": [], "image": ""}
builders = {s["name"] for s in stages[:-1] if s["name"]} | {str(i) for i in range(len(stages) - 1)}
build_runs = " ".join(a for s in stages[:-1] for _, i, a in s["lines"] if i == "RUN")
check("cargo build" in build_runs and "--release" in build_runs and "--locked" in build_runs, XW,
      "no `cargo build --release --locked` in a build stage")
check(not any(i == "RUN" and "cargo " in a for _, i, a in final["lines"]), XW,
      "the final stage runs cargo: it should only receive the binary")

users = [a.split(":")[0].strip() for _, i, a in final["lines"] if i == "USER"]
check(users, XW, "the final stage sets no USER: it would run as root")
check(users and users[-1] not in ("root", "0") and users[-1].isdigit(), XW,
      f"the final stage's USER {users[-1] if users else None!r} must be a numeric non-root UID "
      "(Kubernetes' runAsNonRoot can verify only a number)")
copies = []
for n, i, a in final["lines"]:
    if i == "COPY":
        m = re.search(r"--from=(\S+)", a)
        if m and m.group(1) in builders:
            copies.append(a.split()[-2:])
check(any(src.endswith("herald") for src, _ in copies), XW,
      "the final stage copies no herald binary from the build stage")
dests = [dst for src, dst in copies if src.endswith("herald")]


def exec_form(ins):
    found = [a for _, i, a in final["lines"] if i == ins]
    if not check(found, XW, f"the final stage has no {ins}"):
        return []
    try:
        value = json.loads(found[-1])
    except json.JSONDecodeError:
        value = None
    check(isinstance(value, list), XW, f"{ins} must be in exec (JSON) form, so signals reach herald")
    return value if isinstance(value, list) else []


entrypoint, cmd = exec_form("ENTRYPOINT"), exec_form("CMD")
check(entrypoint == ["herald"], XW, f"ENTRYPOINT {entrypoint}, expected [\"herald\"]")
check(any(d.rstrip("/") in ("/usr/local/bin/herald", "/usr/local/bin", "/usr/bin/herald", "/usr/bin")
          for d in dests), XW, f"the binary goes to {dests}, not onto the PATH as herald")
exposed = " ".join(a for _, i, a in final["lines"] if i == "EXPOSE").split()
check(not udp or f"{udp[1]}/udp" in exposed, XW, f"EXPOSE lacks {udp and udp[1]}/udp (udp.bind)")
check(not metrics or f"{metrics[1]}/tcp" in exposed or str(metrics[1]) in exposed, XW,
      f"EXPOSE lacks {metrics and metrics[1]}/tcp (metrics.listen)")

# The config path herald starts with (the Deployment's args, else the image's CMD) is where
# the Deployment mounts the ConfigMap.
argv = herald.get("args") or cmd
check(not herald.get("command"), DW, "herald: a command replaces the image's ENTRYPOINT")
config_path = None
if "--config" in argv and argv.index("--config") + 1 < len(argv):
    config_path = argv[argv.index("--config") + 1]
check(argv[:1] == ["node"] and config_path, XW, f"herald starts with {argv}, expected node --config PATH")
check(config_path in config_paths, DW,
      f"herald starts with --config {config_path}, but the ConfigMap is mounted at {sorted(config_paths)}")
with open(os.path.join(WORK, "config-name"), "w") as f:
    f.write(os.path.basename(config_path or "herald.toml"))

for p in problems:
    print(f"check-deploy: {p}")
with open(os.path.join(WORK, "static-counts"), "w") as f:
    f.write(f"{passed} {len(problems)}\n")
sys.exit(1 if problems else 0)
