"""`trove login` in the browser (spec §5.2): the real CLI, started on a pseudo-terminal without
`--api-key` (the only way it takes the device flow), prints a code; an operator approves or
denies it through the admin API; the CLI ends logged in, with the chosen namespace lock, or
refused."""

import json
import os
import pty
import re
import select
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import run_cli


def start_login(home: Path, warren):
    """`trove login --base-url …` on a pty; returns the process, the pty and the code it shows."""
    venv_bin = Path(os.environ.get("TROVE_VENV_BIN", Path(os.sys.executable).parent))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROVE_")}
    # No browser to open: the CLI says so and goes on polling.
    env |= {"HOME": str(home), "NO_COLOR": "1", "BROWSER": "true"}
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [str(venv_bin / "trove"), "login", "--base-url", warren.base_url],
        stdin=terminal, stdout=terminal, stderr=terminal, env=env, close_fds=True,
    )
    os.close(terminal)
    seen = b""
    deadline = time.time() + 30
    while time.time() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if ready:
            try:
                seen += os.read(controller, 4096)
            except OSError:
                break
        found = re.search(rb"Code: ([A-Z]{4}-[0-9]{4})", seen)
        if found:
            return proc, controller, found.group(1).decode(), seen
    proc.kill()
    raise AssertionError(f"the CLI showed no code: {seen!r}")


def finish(proc, controller, timeout=60) -> tuple[int, bytes]:
    """Waits for the CLI to end, collecting what it printed."""
    out = b""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                out += os.read(controller, 4096)
            except OSError:
                break
    code = proc.wait(timeout=5)
    os.close(controller)
    return code, out


def decide(warren, verb: str, body: dict):
    req = urllib.request.Request(
        f"{warren.base_url}/v1/workspaces/{warren.workspace_id}/device/{verb}",
        data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {warren.admin_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_login_in_the_browser_approved_with_a_namespace(home, warren, ns):
    proc, controller, code, shown = start_login(home, warren)
    assert f"{warren.base_url}/console/device?code={code}".encode() in shown, shown
    assert decide(warren, "approve", {"user_code": code, "namespace": ns, "name": "laptop"}) == {
        "status": "approved"
    }
    status, out = finish(proc, controller)
    assert status == 0, out

    who = run_cli(home, "whoami")
    assert who.returncode == 0, who.stderr
    assert f"namespace lock  : {ns}" in who.stdout
    assert "scope           : workspace" in who.stdout
    profile = json.loads((home / ".trove" / "config.json").read_text())["profiles"]["default"]
    assert profile["workspace_id"] == warren.workspace_id
    assert profile["namespace"] == ns
    # The key works as any minted key does.
    put = run_cli(home, "write", "hello.txt", "from the browser login")
    assert put.returncode == 0, put.stderr
    cat = run_cli(home, "cat", "hello.txt")
    assert "from the browser login" in cat.stdout


def test_login_in_the_browser_denied(home, warren):
    proc, controller, code, _ = start_login(home, warren)
    # Typed by a person: lower case, no dash.
    assert decide(warren, "deny", {"user_code": code.lower().replace("-", "")}) == {
        "status": "denied"
    }
    status, out = finish(proc, controller)
    assert status != 0
    assert b"denied" in out, out
    assert not (home / ".trove" / "config.json").exists()
