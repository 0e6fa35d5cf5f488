"""Webhooks and the live stream through the real trove-sdk (spec §6.2, §6.4, §7.3): admin
methods, `verify_webhook` on real deliveries, filtering, retries, the test call, delivery
across a restart, and the CLI's `webhooks` commands including `listen`."""

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from trove_sdk import TroveAdminClient, TroveAuthError, TroveClient, TroveNotFoundError, verify_webhook

from conftest import Receiver, _free_port, interruptible, run_cli, start_warren, stop_warren


def verified(secret, delivery):
    headers, body = delivery
    event = verify_webhook(secret=secret, body=body, signature_header=headers["x-trove-signature"])
    assert headers["x-trove-event"] == event.type
    assert headers["x-trove-event-id"] == event.id
    assert headers["content-type"] == "application/json"
    return event


def test_admin_methods_and_signed_filtered_deliveries(warren, admin, client, ns, receiver):
    hook = admin.create_webhook(receiver.url, events=["file.written"], namespace=ns,
                                description="conformance")
    assert hook.webhook_id.startswith("wh-")
    assert hook.signing_secret.startswith("trove-whsec-")
    assert (hook.events, hook.namespace, hook.enabled) == (["file.written"], ns, True)
    assert hook.webhook_id in {w.webhook_id for w in admin.list_webhooks()}

    client.write("workspace/a.txt", "hello")
    client.delete("workspace/a.txt")  # another type: filtered out
    other_key = admin.create_key("other", namespace=ns + "-other").api_key
    with TroveClient(other_key, ns + "-other", base_url=warren.base_url) as other:
        other.write("workspace/b.txt", "not for this hook")  # another namespace: filtered out

    event = verified(hook.signing_secret, receiver.wait_for(1)[0])
    time.sleep(1.0)
    assert len(receiver.got) == 1, [json.loads(b) for _, b in receiver.got]
    assert event.type == "file.written" and event.namespace == ns
    assert event.data == {"path": "workspace/a.txt", "size_bytes": 5, "source": "write"}
    assert event.workspace_id == warren.workspace_id and event.api_version == "2026-04-30"

    result = admin.test_webhook(hook.webhook_id)
    assert (result.ok, result.status, result.error) == (True, 204, None)
    test_event = verified(hook.signing_secret, receiver.wait_for(2)[1])
    assert test_event.type == "webhook.test" and test_event.id == result.event_id

    admin.delete_webhook(hook.webhook_id)
    assert hook.webhook_id not in {w.webhook_id for w in admin.list_webhooks()}
    with pytest.raises(TroveNotFoundError):
        admin.delete_webhook(hook.webhook_id)


def test_workspace_keys_cannot_manage_webhooks(warren, key, receiver):
    with TroveAdminClient.from_api_key(key, base_url=warren.base_url) as c:
        with pytest.raises(TroveAuthError) as e:
            c.create_webhook(receiver.url)
        assert e.value.status_code == 403
        with pytest.raises(TroveAuthError):
            c.list_webhooks()


def test_failed_attempts_are_retried(warren, admin, client, ns):
    rx = Receiver(fail_first=2)
    try:
        hook = admin.create_webhook(rx.url, events=["file.written"], namespace=ns)
        client.write("workspace/r.txt", "x")
        got = rx.wait_for(3)
        events = [verified(hook.signing_secret, d) for d in got]
        assert len({e.id for e in events}) == 1
        time.sleep(0.5)
        assert len(rx.got) == 3
        # The SDK's model drops the health fields; the CLI shows them, from this JSON.
        raw = httpx.get(
            f"{warren.base_url}/v1/workspaces/{warren.workspace_id}/webhooks",
            headers={"Authorization": f"Bearer {warren.admin_key}"},
        ).json()["webhooks"]
        health = next(w for w in raw if w["webhook_id"] == hook.webhook_id)
        assert (health["last_delivery_ok"], health["last_delivery_status"]) == (True, 204)
    finally:
        rx.close()


def test_test_call_reports_network_errors(admin):
    dead = f"http://127.0.0.1:{_free_port()}/hook"
    hook = admin.create_webhook(dead)
    result = admin.test_webhook(hook.webhook_id)
    assert result.ok is False and result.status is None and result.error


def test_delivery_survives_a_restart(tmp_path):
    w = start_warren(tmp_path / "data", {"WARREN_WEBHOOK_BACKOFF": "1s",
                                         "WARREN_WEBHOOK_MAX_ATTEMPTS": "30"})
    port = _free_port()
    try:
        with TroveAdminClient.from_api_key(w.admin_key, base_url=w.base_url) as admin:
            hook = admin.create_webhook(f"http://127.0.0.1:{port}/hook", events=["file.written"])
            key = admin.create_key("k", namespace="restart").api_key
        with TroveClient(key, "restart", base_url=w.base_url) as c:
            c.write("workspace/during-outage.txt", "x")
        time.sleep(0.5)
    finally:
        assert stop_warren(w) == 0
    rx = Receiver(port=port)
    w2 = start_warren(tmp_path / "data", {"WARREN_WEBHOOK_BACKOFF": "1s",
                                          "WARREN_WEBHOOK_MAX_ATTEMPTS": "30"})
    try:
        event = verified(hook.signing_secret, rx.wait_for(1)[0])
        assert event.data["path"] == "workspace/during-outage.txt"
    finally:
        stop_warren(w2)
        rx.close()


def test_cli_webhook_commands(home, warren, receiver):
    r = run_cli(home, "login", "--api-key", warren.admin_key, "--base-url", warren.base_url)
    assert r.returncode == 0, r.stderr
    made = run_cli(home, "webhooks", "create", receiver.url, "--events", "file.written,file.deleted")
    assert made.returncode == 0, made.stderr
    assert "trove-whsec-" in made.stdout
    hook_id = next(w for w in made.stdout.split() if w.startswith("wh-"))
    tested = run_cli(home, "webhooks", "test", hook_id)
    assert tested.returncode == 0, tested.stderr
    listed = run_cli(home, "webhooks", "list")
    assert listed.returncode == 0 and hook_id in listed.stdout
    deleted = run_cli(home, "webhooks", "delete", hook_id, "--yes")
    assert deleted.returncode == 0, deleted.stderr


def test_webhooks_listen_forwards_verifiable_events(home, warren, client, ns, receiver):
    r = run_cli(home, "login", "--api-key", warren.admin_key, "--base-url", warren.base_url)
    assert r.returncode == 0, r.stderr
    secret = "trove-whsec-local-listen-secret"
    venv_bin = Path(os.sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("TROVE_")}
    env.update(HOME=str(home), NO_COLOR="1")
    listen = subprocess.Popen(
        [str(venv_bin / "trove"), "webhooks", "listen", "--forward-to", receiver.url,
         "--secret", secret],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=interruptible,
    )
    try:
        time.sleep(1.5)  # connected
        client.write("workspace/live.txt", "streamed")
        client.delete("workspace/live.txt")
        got = receiver.wait_for(2)
    finally:
        listen.send_signal(signal.SIGINT)
        out, err = listen.communicate(timeout=20)
    events = [verified(secret, d) for d in got]
    assert [e.type for e in events[:2]] == ["file.written", "file.deleted"], out + err
    assert events[0].data["path"] == "workspace/live.txt"
    assert "connected to workspace" in out
