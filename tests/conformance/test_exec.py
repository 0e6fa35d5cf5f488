"""Exec through the real trove-sdk, its CLI (`trove run`) and its MCP server (spec §4.1, §13, §14)."""

import pytest
from trove_sdk import TroveExecError
from trove_sdk.exceptions import TroveError

from conftest import run_cli
from test_cli import login
from test_mcp import call_tools


def test_exec_and_exec_detailed(client):
    client.write("workspace/notes.txt", "one\ntwo\n")
    assert client.exec("wc -l < workspace/notes.txt").strip() == "2"
    r = client.exec_detailed("echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert r.duration_ms >= 0
    with pytest.raises(TroveExecError) as e:
        client.exec("echo failing >&2; false")
    assert e.value.exit_code == 1 and "failing" in e.value.stderr


def test_exec_changes_are_files(client):
    client.exec("mkdir -p workspace/out && echo made > workspace/out/a.txt && rm -f workspace/x")
    assert client.read_text("workspace/out/a.txt") == "made\n"
    names = [e.path for e in client.list_dir("workspace/out")]
    assert names == ["workspace/out/a.txt"]


def test_exec_chain_shares_shell_state(client):
    r = client.exec_chain(["cd workspace", "mkdir -p d && cd d", "X=42", "echo $PWD $X"])
    assert r.exit_code == 0
    assert r.stdout == "/home/agent/workspace/d 42\n"
    r = client.exec_chain(["true", "false", "echo never"])
    assert r.exit_code == 1 and r.stdout == ""


def test_stdin(client):
    assert client.exec("cat | tr a-z A-Z", stdin="hello") == "HELLO"
    assert client.exec("cat") == ""
    with pytest.raises(TroveError) as e:
        client.exec_detailed("wc -c", stdin="x" * (1024 * 1024 + 1))
    assert e.value.status_code == 422


def test_init_sh(client):
    client.set_init("export STAGE=ready\ncd workspace\n")
    assert client.exec("echo $STAGE; pwd") == "ready\n/home/agent/workspace\n"
    client.clear_init()
    assert client.exec("echo ${STAGE:-unset}; pwd") == "unset\n/home/agent\n"


def test_timeout_is_408(client):
    with pytest.raises(TroveError) as e:
        client.exec_detailed("echo progress > workspace/p.txt; sleep 30")
    assert e.value.status_code == 408
    assert "timed out" in str(e.value)
    assert client.read_text("workspace/p.txt") == "progress\n"


def test_trove_run_forwards_exit_codes(home, warren, key, ns):
    login(home, warren, key, "--namespace", ns)
    r = run_cli(home, "run", "--no-stdin", "echo hi; echo oops >&2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n" and "oops" in r.stderr
    r = run_cli(home, "run", "--no-stdin", "exit 5")
    assert r.returncode == 5
    r = run_cli(home, "run", "tr a-z A-Z", input="piped")
    assert r.returncode == 0 and r.stdout.strip() == "PIPED"


def test_mcp_exec_and_file_tools(warren, key, ns):
    _, out = call_tools(
        warren,
        key,
        ns,
        [
            ("trove_write", {"path": "workspace/data.txt", "content": "abc"}),
            ("trove_exec", {"command": "cat workspace/data.txt; echo; echo made > workspace/new.txt"}),
            ("trove_exec", {"command": "echo bad >&2; exit 4"}),
            ("trove_exec", {"command": "cat", "stdin": "from stdin"}),
            ("trove_read", {"path": "workspace/new.txt"}),
            ("trove_bootstrap", {}),
        ],
    )
    wrote, ok, failed, stdin, read, boot = out
    assert ok.startswith("[exit 0]") and "abc" in ok
    assert failed.startswith("[exit 4]") and "--- stderr ---" in failed and "bad" in failed
    assert "from stdin" in stdin
    assert read == "made\n"
    assert "new.txt" in boot
