"""Snapshots through the real trove-sdk and the `trove snapshot` commands (spec §4.9, §13)."""

import json

import pytest
from trove_sdk.exceptions import TroveError, TroveNotFoundError

from conftest import run_cli
from test_cli import login


def test_create_list_restore_delete(client):
    client.write("workspace/keep.md", "v1")
    client.upload("workspace/bin/x.bin", bytes(range(256)) * 10)
    snap = client.create_snapshot("before")
    assert snap.snapshot_id.startswith("snap-") and snap.label == "before"
    assert snap.size_bytes > 0 and snap.created_at.endswith("Z")

    client.write("workspace/keep.md", "v2")
    client.write("workspace/extra.md", "x")
    client.delete("workspace/bin")
    assert client.restore_snapshot(snap.snapshot_id) == 2
    assert client.read_text("workspace/keep.md") == "v1"
    assert client.read_bytes("workspace/bin/x.bin") == bytes(range(256)) * 10
    with pytest.raises(TroveNotFoundError):
        client.read_text("workspace/extra.md")

    unlabeled = client.create_snapshot()
    assert unlabeled.label is None
    listed = client.list_snapshots()
    assert [s.snapshot_id for s in listed] == [unlabeled.snapshot_id, snap.snapshot_id]

    client.delete_snapshot(snap.snapshot_id)
    assert [s.snapshot_id for s in client.list_snapshots()] == [unlabeled.snapshot_id]
    with pytest.raises(TroveNotFoundError):
        client.restore_snapshot(snap.snapshot_id)
    with pytest.raises(TroveNotFoundError):
        client.delete_snapshot(snap.snapshot_id)
    with pytest.raises(TroveError) as e:
        client.create_snapshot("x" * 129)
    assert e.value.status_code == 422


def test_exec_changes_survive_a_round_trip(client):
    client.exec("cd workspace && mkdir -p empty && echo hi > run.sh && chmod +x run.sh && ln -s run.sh link")
    snap = client.create_snapshot("exec-state")
    client.exec("rm -rf workspace/*")
    client.restore_snapshot(snap.snapshot_id)
    out = client.exec("cd workspace && ls -d empty && test -x run.sh && readlink link")
    assert out == "empty\nrun.sh\n"


def test_trove_snapshot_commands(home, warren, key, ns):
    login(home, warren, key, "--namespace", ns)
    assert run_cli(home, "write", "workspace/a.txt", "one").returncode == 0
    r = run_cli(home, "snapshot", "create", "--label", "cli", "--json")
    assert r.returncode == 0, r.stderr
    snap = json.loads(r.stdout)
    sid = snap["snapshot_id"]
    r = run_cli(home, "snapshot", "list")
    assert r.returncode == 0 and sid in r.stdout and "cli" in r.stdout
    assert run_cli(home, "write", "workspace/a.txt", "two").returncode == 0
    r = run_cli(home, "snapshot", "restore", sid, "--yes")
    assert r.returncode == 0, r.stderr
    assert run_cli(home, "cat", "workspace/a.txt").stdout == "one"
    r = run_cli(home, "snapshot", "delete", sid, "--yes")
    assert r.returncode == 0, r.stderr
    r = run_cli(home, "snapshot", "restore", sid, "--yes")
    assert r.returncode != 0
