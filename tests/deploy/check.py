"""Checks deploy/ the way its users meet it.

Lints the Dockerfile (hadolint), validates the compose file against the Compose schema and the
Kubernetes manifests against Kubernetes' schemas, verifies the systemd unit, and then starts
the real binary twice: as the unit starts it (its ExecStart, Environment= and
EnvironmentFile=) and as the container's entrypoint starts it (its ENTRYPOINT, CMD, ENV and
USER), each probed over HTTP. Usage: check.py <path to the warren binary>.
"""

import hashlib
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = pathlib.Path(sys.argv[1]).resolve()
VENV_BIN = pathlib.Path(sys.executable).parent
ADMIN_KEY = "trove-sk-deploy-check-0123456789abcdef"
SECRET = "ab" * 32
failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(name)


def run(name, cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip()
    check(name, r.returncode == 0, out)
    return r, out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, key=None, ns=None, body=None):
    req = urllib.request.Request(url, method=method, data=body)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if ns:
        req.add_header("X-Namespace", ns)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(base, proc, log):
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if http("GET", base + "/readyz")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    print(pathlib.Path(log).read_text(), file=sys.stderr)
    return False


def stop(proc, name):
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = "hung"
    check(f"{name}: stops cleanly on SIGTERM", code == 0, f"exit {code}")


def env_file(path):
    env = {}
    for line in pathlib.Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k] = v
    return env


def lint_and_validate():
    run("hadolint deploy/docker/Dockerfile", [VENV_BIN / "hadolint", DEPLOY / "docker/Dockerfile"])
    run(
        "deploy/compose.yaml against the Compose schema",
        [VENV_BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", DEPLOY / "compose.yaml"],
    )
    k8s = DEPLOY / "k8s"
    manifests = sorted(p for p in k8s.glob("*.yaml") if p.name != "kustomization.yaml")
    run(
        "deploy/k8s against the Kubernetes schemas (strict)",
        [VENV_BIN / "kubernetes-validate", "--strict", *manifests],
    )
    listed = re.findall(r"^\s+-\s+(\S+\.yaml)\s*$", (k8s / "kustomization.yaml").read_text(), re.M)
    missing = [f for f in listed if not (k8s / f).is_file()]
    unlisted = [p.name for p in manifests if p.name not in listed and "template" not in p.name]
    check("deploy/k8s/kustomization.yaml lists every manifest", not missing and not unlisted,
          f"missing {missing}, unlisted {unlisted}")
    json.loads((DEPLOY / "s3-lifecycle.json").read_text())  # compared with S3 in s3_lifecycle.rs

    # systemd-analyze verify resolves ExecStart and the targets inside --root, so the unit is
    # checked in a root that has systemd's own units and the binary where the unit wants it.
    with tempfile.TemporaryDirectory() as root:
        root = pathlib.Path(root)
        shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
        (root / "usr/local/bin").mkdir(parents=True)
        shutil.copy(BIN, root / "usr/local/bin/warren")
        (root / "etc/systemd/system").mkdir(parents=True)
        (root / "etc/warren").mkdir(parents=True)
        shutil.copy(DEPLOY / "systemd/warren.service", root / "etc/systemd/system/")
        shutil.copy(DEPLOY / "warren.env.example", root / "etc/warren/warren.env")
        r = subprocess.run(
            ["systemd-analyze", "verify", f"--root={root}", "/etc/systemd/system/warren.service"],
            capture_output=True, text=True,
        )
        out = (r.stdout + r.stderr).strip()
        # It reports bad settings as warnings and still exits 0: any output is a finding.
        check("systemd-analyze verify deploy/systemd/warren.service", r.returncode == 0 and not out, out)


def as_the_unit_starts_it():
    unit = (DEPLOY / "systemd/warren.service").read_text()
    service = unit.split("[Service]", 1)[1].split("[Install]", 1)[0]
    setting = lambda k: re.findall(rf"^{k}=(.*)$", service, re.M)
    argv = shlex.split(setting("ExecStart")[0])
    check("the unit starts /usr/local/bin/warren", argv[0] == "/usr/local/bin/warren", argv[0])
    env = {"PATH": os.environ["PATH"]}
    for path in setting("EnvironmentFile"):
        check("the unit reads /etc/warren/warren.env", path == "/etc/warren/warren.env", path)
        env.update(env_file(DEPLOY / "warren.env.example"))
    for line in setting("Environment"):
        k, _, v = line.partition("=")
        env[k] = v
    with tempfile.TemporaryDirectory() as tmp:
        state = pathlib.Path(tmp) / "state"
        state.mkdir(mode=0o711)  # StateDirectoryMode
        state.chmod(0o711)
        port = free_port()
        # Only where it listens and keeps state differ from the machine the unit is for.
        env.update(WARREN_DATA_DIR=str(state), WARREN_LISTEN=f"127.0.0.1:{port}",
                   WARREN_SECRET=SECRET, WARREN_ADMIN_KEY=ADMIN_KEY)
        log = pathlib.Path(tmp) / "log"
        with open(log, "w") as err:
            proc = subprocess.Popen([BIN, *argv[1:]], env=env, stdout=subprocess.DEVNULL,
                                    stderr=err, cwd="/", umask=0o077)
        base = f"http://127.0.0.1:{port}"
        try:
            check("unit: ready", wait_ready(base, proc, log))
            status, body = http("GET", base + "/metrics", key=ADMIN_KEY)
            check("unit: /metrics with the admin key", status == 200 and b"warren_" in body, status)
            ws = json.loads(http("GET", base + "/v1/me", key=ADMIN_KEY)[1])["workspace_id"]
            status, body = http("POST", f"{base}/v1/workspaces/{ws}/keys", key=ADMIN_KEY,
                                body=json.dumps({"name": "unit", "namespace": "unit"}).encode())
            key = json.loads(body)["api_key"]
            status, body = http("POST", base + "/v1/exec", key=key, ns="unit",
                                body=json.dumps({"command": "echo ran > workspace/f && cat workspace/f"}).encode())
            check("unit: exec runs", status == 200 and json.loads(body)["stdout"] == "ran\n", body[:300])
        finally:
            stop(proc, "unit")
            # A state directory under a private temporary one puts the working copies in the
            # fallback exec root; this run's own directory there goes with it.
            digest = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:16]
            shutil.rmtree(pathlib.Path("/var/lib/warren-exec") / digest, ignore_errors=True)
        lines = log.read_text().splitlines()
        bad = [l for l in lines if not l.startswith("{")]
        check("unit: logs are JSON lines (WARREN_LOG_FORMAT=json)", lines and not bad, bad[:3])


def dockerfile():
    """ENV, USER, ENTRYPOINT and CMD of the runtime stage."""
    text = (DEPLOY / "docker/Dockerfile").read_text().replace("\\\n", " ")
    runtime = text.split("\nFROM ")[-1]
    env, user, entry, cmd = {}, None, None, None
    for line in runtime.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", rest):
                env[k] = v
        elif word == "USER":
            user = rest.strip()
        elif word == "ENTRYPOINT":
            entry = json.loads(rest)
        elif word == "CMD":
            cmd = json.loads(rest)
    return env, user, entry, cmd


def as_the_container_starts_it():
    env, user, entry, cmd = dockerfile()
    if not pathlib.Path(entry[0]).exists() and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", entry[0].rsplit("/", 1)[-1]],
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, check=False,
                       capture_output=True)
    check(f"the entrypoint's {entry[0]} is installed", pathlib.Path(entry[0]).exists())
    check("the image runs as a numeric non-root user", user is not None and user.isdigit() and user != "0", user)
    uid = int(user)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        data = pathlib.Path(tmp) / "data"
        data.mkdir()
        os.chown(data, uid, uid)
        data.chmod(0o711)
        port = free_port()
        run_env = {"PATH": os.environ["PATH"], **env, "WARREN_DATA_DIR": str(data),
                   "WARREN_LISTEN": f"127.0.0.1:{port}", "WARREN_SECRET": SECRET,
                   "WARREN_ADMIN_KEY": ADMIN_KEY}
        argv = [str(BIN) if a == "/usr/local/bin/warren" else a for a in entry + cmd]
        log = pathlib.Path(tmp) / "log"
        with open(log, "w") as err:
            proc = subprocess.Popen(
                ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv],
                env=run_env, stdout=subprocess.DEVNULL, stderr=err, cwd="/")
        base = f"http://127.0.0.1:{port}"
        try:
            check("container: ready as uid %d" % uid, wait_ready(base, proc, log))
            ws = json.loads(http("GET", base + "/v1/me", key=ADMIN_KEY)[1])["workspace_id"]
            status, body = http("POST", f"{base}/v1/workspaces/{ws}/keys", key=ADMIN_KEY,
                                body=json.dumps({"name": "box", "namespace": "box"}).encode())
            key = json.loads(body)["api_key"]
            status, _ = http("POST", base + "/write", key=key, ns="box",
                             body=json.dumps({"path": "a.txt", "content": "in a box"}).encode())
            check("container: files are served unprivileged", status == 200, status)
            status, body = http("POST", base + "/v1/exec", key=key, ns="box",
                                body=json.dumps({"command": "true"}).encode())
            detail = json.loads(body).get("detail", "")
            check("container: exec unprivileged is a 503 saying why",
                  status == 503 and "root" in detail, (status, detail))
        finally:
            stop(proc, "container")


lint_and_validate()
as_the_unit_starts_it()
as_the_container_starts_it()
print(f"deploy checks: {len(failures)} failed" + (f": {failures}" if failures else ""))
sys.exit(1 if failures else 0)
