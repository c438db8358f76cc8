"""Checks the deploy files offline, as far as this machine allows:

- the Helm chart lints (real Helm, through helm-python-sdk) and renders for
  its defaults and both values files; every rendered object validates
  against the Kubernetes schemas (kubernetes-validate) and KEDA's
  ScaledObjects against KEDA's CRD schemas (@kubernetes-models/keda, from
  npm, through scripts/check_keda.mjs);
- the rendered services' config file is valid TOML with known top-level keys;
- the stage Deployments carry /healthz and /readyz probes and the KEDA
  thresholds of values.yaml;
- the Dockerfile (which cannot be built here: no container engine) copies
  only files that exist and that .dockerignore lets through, and the
  runtime stage installs every package that holds a library `ldd` finds
  for the mouthmap binary (directly or as a dependency).

Run by scripts/test (scripts/check-deploy); exits non-zero with what failed.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy/helm/mouthmap"
KUBE = "1.30.0"

failures: list[str] = []
BINARY = next((p for p in [ROOT / "target/release/mouthmap", ROOT / "target/debug/mouthmap"]
               if p.exists()), None)
_helps: dict[tuple[str, ...], str] = {}


def check_args(what: str, args: list[str], env: dict[str, str] | None = None) -> None:
    """Every --flag in a container's arguments, and every MOUTHMAP_ variable
    in its environment, is one the mouthmap subcommand knows (its --help)."""
    if BINARY is None or not args:
        return
    words = [a for a in args if not a.startswith("-")]
    command = tuple(words[:2]) if words[:1] in (["features"], ["topics"]) else tuple(words[:1])
    if command not in _helps:
        out = subprocess.run([str(BINARY), *command, "--help"], capture_output=True, text=True)
        _helps[command] = out.stdout + out.stderr
    page = _helps[command]
    for a in args:
        if a.startswith("--"):
            flag = a.split("=", 1)[0]
            if not re.search(re.escape(flag) + r"[ =,\n]", page):
                fail(f"{what}: `mouthmap {' '.join(command)}` has no {flag}")
    for name in (env or {}):
        if name.startswith("MOUTHMAP_") and name not in ("MOUTHMAP_HEALTH_PORT", "MOUTHMAP_KAFKA_SASL_PASSWORD") \
                and name not in page:
            fail(f"{what}: `mouthmap {' '.join(command)}` reads no {name}")


def fail(msg: str) -> None:
    failures.append(msg)
    print(f"FAIL {msg}", file=sys.stderr)


def values_of(name: str | None) -> dict:
    if name is None:
        return {}
    return yaml.safe_load((CHART / name).read_text())


def check(values_name: str | None) -> None:
    label = values_name or "values.yaml"
    values = values_of(values_name)
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE}")
    for m in report.get("messages", []):
        if m.get("severity", 0) >= 2:
            fail(f"{label}: helm lint: {m.get('path')}: {m.get('error')}")
    for e in report.get("errors", []) or []:
        fail(f"{label}: helm lint: {e}")
    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(values, name="mm", namespace="streams", is_install=True)
    objects = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append((path, doc))
    kinds = sorted({o["kind"] for _, o in objects})
    print(f"{label}: {len(objects)} objects: {', '.join(kinds)}")
    keda = [o for _, o in objects if o["apiVersion"].startswith("keda.sh/")]
    if keda:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(keda, f)
        out = subprocess.run(
            ["node", str(ROOT / "scripts/check_keda.mjs"), f.name],
            capture_output=True, text=True, env=os.environ,
        )
        os.unlink(f.name)
        for line in out.stdout.splitlines():
            if not line.endswith(": valid"):
                fail(f"{label}: KEDA schema: {line}")
        if out.returncode != 0 and not out.stdout:
            fail(f"{label}: KEDA check did not run: {out.stderr.strip()}")
        print(f"{label}: {len(keda)} KEDA objects checked")
    for path, o in objects:
        what = f"{label}: {path}: {o['kind']} {o['metadata']['name']}"
        if o["apiVersion"].startswith("keda.sh/"):
            continue
        try:
            kubernetes_validate.validate(o, KUBE, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{what}: {e.message}")
        except Exception as e:  # noqa: BLE001 - a schema missing is a failure too
            fail(f"{what}: {e}")
        if o["kind"] == "ConfigMap" and "mouthmap.toml" in o["data"]:
            try:
                conf = tomllib.loads(o["data"]["mouthmap.toml"])
            except tomllib.TOMLDecodeError as e:
                fail(f"{what}: mouthmap.toml is not TOML: {e}")
            else:
                print(f"{label}: mouthmap.toml keys: {sorted(conf)}")
        if o["kind"] in ("Deployment", "Job"):
            for c in o["spec"]["template"]["spec"]["containers"]:
                if c["name"] != "nginx-rtmp":
                    check_args(what, c.get("args", []), {e["name"]: "" for e in c.get("env", [])})
        if o["kind"] == "Deployment":
            for c in o["spec"]["template"]["spec"]["containers"]:
                if c["name"] == "nginx-rtmp":
                    continue
                probes = (c.get("livenessProbe", {}).get("httpGet", {}).get("path"),
                          c.get("readinessProbe", {}).get("httpGet", {}).get("path"))
                if probes != ("/healthz", "/readyz"):
                    fail(f"{what}: container {c['name']} probes {probes}, want /healthz and /readyz")
    scaled = [o for _, o in objects if o["kind"] == "ScaledObject"]
    merged = chart.merge_values(values)
    if merged["keda"]["enabled"]:
        names = sorted(o["spec"]["scaleTargetRef"]["name"].rsplit("-", 1)[-1] for o in scaled)
        want = sorted(s for s in ["preprocess", "infer", "decode", "features"]
                      if s != "features" or merged["features"]["enabled"])
        if names != want:
            fail(f"{label}: ScaledObjects for {names}, want one per consuming stage {want}")
        for o in scaled:
            stage = o["spec"]["scaleTargetRef"]["name"].rsplit("-", 1)[-1]
            got = o["spec"]["triggers"][0]["metadata"]["lagThreshold"]
            if got != str(merged[stage]["autoscaling"]["lagThreshold"]):
                fail(f"{label}: {stage} lagThreshold {got}")
    elif scaled:
        fail(f"{label}: KEDA is off but {len(scaled)} ScaledObjects render")


# Present in every base image the Dockerfile uses (Debian slim, Ubuntu).
BASE_PACKAGES = {"libc6", "libgcc-s1"}


def package_of(lib: str) -> str | None:
    real = os.path.realpath(lib)
    for path in dict.fromkeys([lib, real, "/usr" + lib, "/usr" + real]):
        out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.split(":", 1)[0].strip()
    return None


def check_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = text.replace("\\\n", " ").splitlines()
    ignore = [
        l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
        if l.strip() and not l.startswith("#")
    ]
    copied = 0
    for line in lines:
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for src in [w for w in words[1:-1] if not w.startswith("--")]:
            copied += 1
            if not (ROOT / src).exists():
                fail(f"Dockerfile: COPY {src}: no such file in the repository")
            top = src.split("/", 1)[0] + "/"
            if top in ignore and f"!{src}" not in ignore:
                fail(f"Dockerfile: COPY {src}: excluded by .dockerignore ({top})")
    runtime = text.split(" AS runtime", 1)[1]
    m = re.search(r"apt-get install -y --no-install-recommends(.*?)&&", runtime, re.S)
    if not m:
        fail("Dockerfile: the runtime stage installs no packages")
        return
    wanted = [w for w in m.group(1).replace("\\", " ").split() if w]
    deps = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
         "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *wanted],
        capture_output=True, text=True,
    )
    closure = {l.strip().split(":")[0] for l in deps.stdout.splitlines() if not l.startswith(" ")}
    closure |= {l.split(":", 1)[1].strip().split(":")[0] for l in deps.stdout.splitlines()
                if l.strip().startswith("Depends:") or l.strip().startswith("PreDepends:")}
    binary = next((p for p in [ROOT / "target/release/mouthmap", ROOT / "target/debug/mouthmap"]
                   if p.exists()), None)
    if binary is None:
        fail("no mouthmap binary to run ldd on: build it first")
        return
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    libs = [l.split("=>")[1].split("(")[0].strip() for l in ldd.splitlines() if "=>" in l]
    missing = []
    for lib in libs:
        if not lib or lib == "not":
            fail(f"ldd: a library of {binary} is not found here: {ldd}")
            continue
        pkg = package_of(lib)
        if pkg is None:
            fail(f"ldd: {lib} belongs to no Debian package")
        elif pkg not in closure and pkg not in BASE_PACKAGES:
            missing.append(f"{lib} ({pkg})")
    for m in missing:
        fail(f"Dockerfile: the runtime stage does not install {m}, which the binary needs")
    print(f"Dockerfile: {copied} copied paths exist; {len(libs)} libraries of {binary.name}, "
          f"all from the {len(wanted)} runtime packages or their dependencies")


def check_compose() -> None:
    compose = yaml.safe_load((ROOT / "deploy/compose/docker-compose.yml").read_text())
    for name, svc in compose["services"].items():
        if "mouthmap" not in str(svc.get("image", "")):
            continue
        check_args(f"compose: {name}", svc.get("command", []), svc.get("environment", {}))
    print(f"compose: the mouthmap services' flags and variables are known to the binary")


check_dockerfile()
check_compose()
for name in [None, "values-small.yaml", "values-large.yaml"]:
    try:
        check(name)
    except Exception as e:  # noqa: BLE001
        fail(f"{name or 'values.yaml'}: {type(e).__name__}: {e}")

if failures:
    print(f"{len(failures)} deploy check(s) failed", file=sys.stderr)
    sys.exit(1)
print("deploy checks passed")
