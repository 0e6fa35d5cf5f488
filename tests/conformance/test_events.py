"""The events feed through the real `trove` CLI (spec §6.3, §13): `events list` paging and
filters, and `trove tail` showing every event exactly once."""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from trove_sdk import TroveClient

from conftest import interruptible, run_cli


def login_admin(home, warren):
    r = run_cli(home, "login", "--api-key", warren.admin_key, "--base-url", warren.base_url)
    assert r.returncode == 0, r.stderr


def test_events_list(home, warren, client, ns):
    for i in range(5):
        client.write(f"workspace/f{i}.txt", "x")
    client.delete("workspace/f0.txt")
    login_admin(home, warren)

    r = run_cli(home, "events", "list", "-n", ns, "--json", "--limit", "50")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["type"] for e in events] == ["file.deleted"] + ["file.written"] * 5
    assert events[0]["data"] == {"path": "workspace/f0.txt"}
    assert events[1]["data"] == {"path": "workspace/f4.txt", "size_bytes": 1, "source": "write"}

    only = run_cli(home, "events", "list", "-n", ns, "--types", "file.deleted", "--json")
    assert [json.loads(l)["type"] for l in only.stdout.splitlines()] == ["file.deleted"]

    # Paging: two at a time, following the cursor hint the CLI prints.
    seen, cursor = [], None
    while True:
        args = ["events", "list", "-n", ns, "--limit", "2"]
        if cursor:
            args += ["--cursor", cursor]
        page = run_cli(home, *args)
        assert page.returncode == 0, page.stderr
        seen += [line for line in page.stdout.splitlines() if line.strip()]
        hint = [l for l in page.stderr.splitlines() if "--cursor" in l]
        if not hint:
            break
        cursor = hint[0].split("--cursor", 1)[1].strip()
    assert len(seen) == 6
    assert "file.deleted" in seen[0]

    human = run_cli(home, "events", "list", "-n", ns)
    assert "file.written" in human.stdout and "f4.txt" in human.stdout


def test_tail_shows_each_event_exactly_once(home, warren, key, ns):
    login_admin(home, warren)
    venv_bin = Path(os.sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROVE_")}
    env.update(HOME=str(home), NO_COLOR="1")
    tail = subprocess.Popen(
        [str(venv_bin / "trove"), "tail", "-n", ns, "--json", "--interval", "0.2", "--since", "now"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=interruptible,
    )
    try:
        time.sleep(1.0)  # let the first poll set its bookmark
        written = []

        def writer(prefix):
            with TroveClient(key, ns, base_url=warren.base_url) as c:
                for i in range(15):
                    path = f"workspace/{prefix}{i}.txt"
                    c.write(path, "x")
                    written.append(path)
                    if i % 5 == 0:
                        time.sleep(0.25)  # spread across several polls

        threads = [threading.Thread(target=writer, args=(p,)) for p in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1.5)  # a few more polls after the last write
    finally:
        tail.send_signal(signal.SIGINT)
        out, err = tail.communicate(timeout=20)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    paths = [e["data"]["path"] for e in events if e["type"] == "file.written"]
    assert sorted(paths) == sorted(written), err
    assert len(paths) == len(set(paths)) == 30
