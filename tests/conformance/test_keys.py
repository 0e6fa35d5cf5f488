"""Keys and identity through the real trove-sdk admin client (spec §2.3, §5.1, §6.1)."""

import httpx
import pytest
from trove_sdk import TroveAdminClient, TroveAuthError, TroveClient, TroveError, TroveNotFoundError


def test_from_api_key_discovers_the_workspace(warren, admin):
    assert warren.workspace_id.startswith("ws-")
    assert admin._workspace_id == warren.workspace_id


def test_create_list_revoke(warren, admin, ns):
    created = admin.create_key("alice", namespace=ns)
    assert created.api_key.startswith("trove-sk-")
    assert created.prefix == created.api_key[:12]
    assert created.scope == "workspace"
    assert created.namespace == ns
    assert created.created_at.endswith("Z")

    with TroveClient(created.api_key, ns, base_url=warren.base_url) as c:
        c.list_dir()
    listed = {k.key_id: k for k in admin.list_keys()}
    assert created.key_id in listed
    raw = httpx.get(
        f"{warren.base_url}/v1/workspaces/{warren.workspace_id}/keys",
        headers={"Authorization": f"Bearer {warren.admin_key}"},
    ).json()["keys"]
    mine = next(k for k in raw if k["key_id"] == created.key_id)
    assert mine["last_used_at"] is not None and mine["last_used_at"].endswith("Z")
    assert "api_key" not in mine

    admin.revoke_key(created.key_id)
    assert created.key_id not in {k.key_id for k in admin.list_keys()}
    with TroveClient(created.api_key, ns, base_url=warren.base_url) as c:
        with pytest.raises(TroveAuthError) as e:
            c.list_dir()
        assert e.value.status_code == 401
    with pytest.raises(TroveNotFoundError):
        admin.revoke_key(created.key_id)


def test_unlocked_workspace_key(warren, admin, ns):
    ops = admin.create_key("ops")
    assert ops.namespace is None and ops.scope == "workspace"
    with TroveClient(ops.api_key, ns, base_url=warren.base_url) as c:
        c.write("workspace/x.txt", "hi")
        assert c.read_text("workspace/x.txt") == "hi"


def test_workspace_keys_cannot_manage_keys(warren, key, ns):
    with TroveAdminClient.from_api_key(key, base_url=warren.base_url) as c:
        with pytest.raises(TroveAuthError) as e:
            c.create_key("sneaky", namespace="other")
        assert e.value.status_code == 403
        assert "Workspace keys cannot manage keys." in str(e.value)
        with pytest.raises(TroveAuthError):
            c.list_keys()
        with pytest.raises(TroveAuthError):
            c.revoke_key("key-anything")


def test_admin_key_locked_to_a_namespace_is_refused(warren):
    r = httpx.post(
        f"{warren.base_url}/v1/workspaces/{warren.workspace_id}/keys",
        headers={"Authorization": f"Bearer {warren.admin_key}"},
        json={"name": "x", "namespace": "a", "admin": True},
    )
    assert r.status_code == 400
    assert r.json()["detail"]


def test_invalid_key_is_401(warren):
    with pytest.raises(TroveAuthError) as e:
        TroveAdminClient.from_api_key("trove-sk-not-a-key", base_url=warren.base_url)
    assert e.value.status_code == 401


def test_me_fields(warren, key, ns):
    me = httpx.get(f"{warren.base_url}/v1/me", headers={"Authorization": f"Bearer {key}"}).json()
    assert me["workspace_id"] == warren.workspace_id
    assert me["scope"] == "workspace"
    assert me["namespace"] == ns
    assert me["key_id"].startswith("key-")
    assert me["capabilities"] == ["exec.stdin"]


def test_malformed_key_requests_are_4xx(warren):
    url = f"{warren.base_url}/v1/workspaces/{warren.workspace_id}/keys"
    auth = {"Authorization": f"Bearer {warren.admin_key}"}
    assert httpx.post(url, headers=auth, content=b"{oops").status_code == 400
    assert httpx.post(url, headers=auth, json={"namespace": "x"}).status_code == 422
    assert httpx.post(url, headers=auth, json={"name": ["x"]}).status_code == 422
    r = httpx.post(url, headers=auth, json={"name": "x", "namespace": "bad/name"})
    assert r.status_code == 400 and "namespace" in r.json()["detail"]
