"""The real `trove` CLI against Warren (spec §13): login, whoami, doctor, keys, and the file verbs."""

import json

from conftest import run_cli


def login(home, warren, key, *extra):
    r = run_cli(home, "login", "--api-key", key, "--base-url", warren.base_url, *extra)
    assert r.returncode == 0, r.stderr
    return r


def test_login_whoami_doctor(home, warren, key, ns):
    r = login(home, warren, key)
    assert f"workspace={warren.workspace_id}" in r.stdout
    assert f"namespace={ns}" in r.stdout, "the namespace lock comes from /v1/me"
    config = json.loads((home / ".trove" / "config.json").read_text())
    profile = config["profiles"]["default"]
    assert profile["workspace_id"] == warren.workspace_id
    assert profile["namespace"] == ns

    who = run_cli(home, "whoami")
    assert who.returncode == 0, who.stderr
    assert "scope           : workspace" in who.stdout
    assert f"namespace lock  : {ns}" in who.stdout

    doc = run_cli(home, "doctor")
    assert doc.returncode == 0, doc.stdout + doc.stderr
    assert "/v1/me OK — scope=workspace" in doc.stdout
    assert f"key is locked to namespace={ns}" in doc.stdout


def test_login_with_a_bad_key_fails(home, warren):
    r = run_cli(home, "login", "--api-key", "trove-sk-wrong", "--base-url", warren.base_url)
    assert r.returncode != 0
    assert "auth failed (401)" in r.stderr


def test_keys_commands(home, warren, ns):
    login(home, warren, warren.admin_key)
    made = run_cli(home, "keys", "create", "cli-made", "--namespace", ns, "--json")
    assert made.returncode == 0, made.stderr
    body = json.loads(made.stdout)
    assert body["api_key"].startswith("trove-sk-") and body["namespace"] == ns

    listed = run_cli(home, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert body["key_id"] in {k["key_id"] for k in json.loads(listed.stdout)["keys"]}
    table = run_cli(home, "keys", "list")
    assert body["key_id"] in table.stdout and "cli-made" in table.stdout

    revoked = run_cli(home, "keys", "revoke", body["key_id"], "--yes")
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked {body['key_id']}" in revoked.stdout
    again = run_cli(home, "keys", "revoke", body["key_id"], "--yes")
    assert again.returncode == 1 and "key not found" in again.stderr

    admin_ns = run_cli(home, "keys", "create", "x", "--admin", "--namespace", ns)
    assert admin_ns.returncode != 0


def test_keys_with_a_workspace_key_is_403_exit_2(home, warren, key):
    login(home, warren, key)
    r = run_cli(home, "keys", "create", "nope")
    assert r.returncode == 2
    assert "403" in r.stderr


def test_file_verbs(home, warren, key, ns, tmp_path):
    login(home, warren, key)
    w = run_cli(home, "write", "workspace/notes.txt", "hello from the cli")
    assert w.returncode == 0, w.stderr
    assert "wrote workspace/notes.txt" in w.stdout

    piped = run_cli(home, "write", "workspace/piped.txt", "--stdin", input="from a pipe\n")
    assert piped.returncode == 0, piped.stderr

    cat = run_cli(home, "cat", "workspace/notes.txt")
    assert (cat.returncode, cat.stdout) == (0, "hello from the cli")

    local = tmp_path / "report.bin"
    local.write_bytes(bytes(range(256)) * 10)
    put = run_cli(home, "put", str(local), "workspace/docs/")
    assert put.returncode == 0, put.stderr
    assert "uploaded workspace/docs/report.bin" in put.stdout

    ls = run_cli(home, "ls")
    assert ls.returncode == 0, ls.stderr
    assert ls.stdout.splitlines() == ["docs/", "notes.txt", "piped.txt"]
    ls_json = json.loads(run_cli(home, "ls", "workspace/docs", "--json").stdout)
    assert [e["path"] for e in ls_json["entries"]] == ["workspace/docs/report.bin"]
    ls_long = run_cli(home, "ls", "-l", "workspace/docs")
    assert "2.5KB" in ls_long.stdout and "report.bin" in ls_long.stdout

    target = tmp_path / "back.bin"
    get = run_cli(home, "get", "workspace/docs/report.bin", str(target))
    assert get.returncode == 0, get.stderr
    assert target.read_bytes() == local.read_bytes()
    refused = run_cli(home, "cat", "workspace/docs/report.bin")
    assert refused.returncode != 0 and "binary" in refused.stderr
    missing = run_cli(home, "get", "workspace/nope.bin", str(tmp_path / "nope"))
    assert missing.returncode != 0 and "not found" in missing.stderr

    rm = run_cli(home, "rm", "workspace/docs", "workspace/nope", "--yes")
    assert rm.returncode == 0, rm.stderr
    assert "deleted workspace/docs" in rm.stdout
    assert "not found: workspace/nope" in rm.stderr
    assert run_cli(home, "ls").stdout.splitlines() == ["notes.txt", "piped.txt"]


def test_empty_namespace_ls(home, warren, key):
    login(home, warren, key)
    r = run_cli(home, "ls")
    assert r.returncode == 0 and "(empty)" in r.stdout


def test_cli_cross_namespace_is_exit_2(home, warren, key, ns):
    login(home, warren, key)
    r = run_cli(home, "ls", "-n", ns + "-elsewhere")
    assert r.returncode == 2
    assert "scoped to namespace" in r.stderr


def test_env_configuration(home, warren, key, ns):
    env = {
        "TROVE_API_KEY": key,
        "TROVE_WORKSPACE_ID": warren.workspace_id,
        "TROVE_BASE_URL": warren.base_url,
        "TROVE_NAMESPACE": ns,
    }
    assert run_cli(home, "write", "workspace/e.txt", "env", env=env).returncode == 0
    assert run_cli(home, "cat", "workspace/e.txt", env=env).stdout == "env"
