"""The file API through the real trove-sdk client (spec §3, §4.3–4.8, §8)."""

import httpx
import pytest
from trove_sdk import TroveAuthError, TroveClient, TroveError, TroveNotFoundError


def test_write_and_read_every_way(client):
    r = client.write("workspace/notes/hello.md", "# Hi\nthere\n")
    assert r.path == "workspace/notes/hello.md"
    assert r.size_bytes == len("# Hi\nthere\n".encode())
    assert client.read_text("workspace/notes/hello.md") == "# Hi\nthere\n"
    assert client.read("workspace/notes/hello.md") == "# Hi\nthere\n"
    info = client.read_file("workspace/notes/hello.md")
    assert info.encoding == "utf-8" and not info.truncated
    assert info.path == "workspace/notes/hello.md"
    assert info.modified_at.endswith("Z")
    assert client.read_bytes("workspace/notes/hello.md") == b"# Hi\nthere\n"
    full = client.read_bytes_full("workspace/notes/hello.md")
    assert full.size_bytes == r.size_bytes and not full.truncated
    # Unprefixed paths work on the read side too.
    assert client.read_text("notes/hello.md") == "# Hi\nthere\n"


def test_upload_binary(client):
    data = bytes(range(256)) * 100
    r = client.upload("workspace/img/pic.png", data)
    assert (r.path, r.size_bytes) == ("workspace/img/pic.png", len(data))
    assert client.read("workspace/img/pic.png") == data
    assert client.read_file("workspace/img/pic.png").encoding == "binary"
    with pytest.raises(TroveError) as e:
        client.read_text("workspace/img/pic.png")
    assert e.value.status_code == 415  # raised by the client itself on encoding=binary


def test_upload_with_spaces_and_unicode(client):
    r = client.upload("workspace/my docs/résumé (1).txt", "ok".encode())
    assert r.path == "workspace/my docs/résumé (1).txt"
    assert client.read_text("workspace/my docs/résumé (1).txt") == "ok"


def test_list_dir_order_and_recursion(client):
    for p in ["b.txt", "a.txt", "zdir/y.txt", "adir/k.txt", "adir/sub/deep.txt"]:
        client.write(f"workspace/{p}", "x")
    top = client.list_dir("workspace/")
    assert [(e.name, e.is_dir) for e in top] == [
        ("adir", True), ("zdir", True), ("a.txt", False), ("b.txt", False)
    ]
    assert top[0].path == "workspace/adir" and top[0].size_bytes is None
    assert top[2].size_bytes == 1 and not top.truncated
    rec = client.list_dir("workspace/", recursive=True)
    assert [e.path for e in rec] == [
        "workspace/adir", "workspace/adir/sub", "workspace/adir/sub/deep.txt",
        "workspace/adir/k.txt", "workspace/zdir", "workspace/zdir/y.txt",
        "workspace/a.txt", "workspace/b.txt",
    ]
    assert [e.name for e in client.list_dir("workspace/adir")] == ["sub", "k.txt"]


def test_new_namespace_lists_empty(client):
    listing = client.list_dir("workspace/")
    assert list(listing) == [] and listing.truncated is False
    assert list(client.list_dir("workspace/", recursive=True)) == []


def test_delete_file_and_directory(client):
    client.write("workspace/d/a.txt", "1")
    client.write("workspace/d/e/b.txt", "2")
    client.write("workspace/keep.txt", "3")
    assert client.delete("workspace/d/a.txt") == "workspace/d/a.txt"
    assert client.delete("workspace/d") == "workspace/d"
    assert [e.path for e in client.list_dir("workspace/", recursive=True)] == ["workspace/keep.txt"]
    with pytest.raises(TroveNotFoundError) as e:
        client.delete("workspace/d")
    assert "Path not found: workspace/d" in str(e.value)


def test_missing_files_are_404(client):
    with pytest.raises(TroveNotFoundError) as e:
        client.read_text("workspace/missing.png")
    assert "Path not found: workspace/missing.png" in str(e.value)
    with pytest.raises(TroveNotFoundError):
        client.read_bytes("workspace/missing.png")
    with pytest.raises(TroveNotFoundError):
        client.list_dir("workspace/nope/")


def test_init_helpers(client):
    assert client.get_init() is None
    assert client.clear_init() is False
    r = client.set_init("cd workspace\nexport A=1\n")
    assert r.path == "workspace/.trove/init.sh"
    assert client.get_init() == "cd workspace\nexport A=1\n"
    assert client.clear_init() is True
    assert client.get_init() is None


def test_bootstrap(client, ns):
    empty = client.bootstrap()
    assert empty.file_count == 0 and empty.agent_memory is None and empty.init_script is None
    client.write("workspace/.trove/agent.md", "remember the milk")
    client.set_init("source .venv/bin/activate\n")
    for i in range(12):
        client.write(f"workspace/f{i:02}.txt", str(i))
    b = client.bootstrap()
    assert b.namespace == ns
    assert b.file_count == 12, "metadata files under .trove/ are not counted"
    assert b.agent_memory == "remember the milk"
    assert b.init_script == "source .venv/bin/activate\n"
    assert len(b.recent_files) == 10
    assert b.recent_files[0].path == "workspace/f11.txt", "newest first by modified_at"
    assert "<workspace" in b.as_system_prompt_block()


def test_large_text_preview_is_truncated(client):
    text = "é" * (700 * 1024)  # 1.4 MB of 2-byte characters
    client.write("workspace/big.txt", text)
    info = client.read_file("workspace/big.txt")
    assert info.truncated is True
    assert info.size_bytes == len(text.encode())
    assert info.content == "é" * (512 * 1024)


def test_upload_over_100_mb_is_413(client):
    with pytest.raises(TroveError) as e:
        client.upload("workspace/huge.bin", b"\0" * (100 * 1024 * 1024 + 1))
    assert e.value.status_code == 413
    assert list(client.list_dir("workspace/")) == []


def test_traversal_is_rejected(client, admin, warren, ns):
    victim_ns = ns + "-victim"
    victim_key = admin.create_key("victim", namespace=victim_ns).api_key
    with TroveClient(victim_key, victim_ns, base_url=warren.base_url) as v:
        v.write("workspace/secret.txt", "VICTIM-SECRET")
    for p in [f"../{victim_ns}/secret.txt", "workspace/../x", "a/../../b", "..\\x", "a\0b"]:
        with pytest.raises(TroveError) as e:
            client.write(p, "x")
        assert e.value.status_code == 400, p
        with pytest.raises(TroveError) as e:
            client.read_text(p)
        assert e.value.status_code == 400, p
        # httpx resolves `..` in URL paths before sending, so some of these arrive as a
        # different, unknown route (404), and it refuses a NUL outright; the rest reach the
        # validator (400). None may succeed.
        with pytest.raises((TroveError, httpx.InvalidURL)) as e:
            client.upload(p, b"x")
        if isinstance(e.value, TroveError):
            assert e.value.status_code in (400, 404), p
    with pytest.raises(TroveNotFoundError):
        client.read_text("/etc/passwd")
    with TroveClient(victim_key, victim_ns, base_url=warren.base_url) as v:
        assert v.read_text("workspace/secret.txt") == "VICTIM-SECRET"
        assert [e.path for e in v.list_dir("workspace/", recursive=True)] == ["workspace/secret.txt"]


def test_scoped_key_cannot_reach_another_namespace(warren, key, ns):
    with TroveClient(key, ns + "-other", base_url=warren.base_url) as c:
        for call in [
            lambda: c.list_dir(),
            lambda: c.read_text("workspace/x"),
            lambda: c.write("workspace/x", "y"),
            lambda: c.upload("workspace/x", b"y"),
            lambda: c.read_bytes("workspace/x"),
            lambda: c.delete("workspace/x"),
        ]:
            with pytest.raises(TroveAuthError) as e:
                call()
            assert e.value.status_code == 403
            assert f"This key is scoped to namespace '{ns}'" in str(e.value)


def test_admin_key_cannot_touch_files(warren, ns):
    with TroveClient(warren.admin_key, ns, base_url=warren.base_url) as c:
        with pytest.raises(TroveAuthError) as e:
            c.list_dir()
        assert e.value.status_code == 403
        with pytest.raises(TroveAuthError):
            c.write("workspace/x", "y")


def test_malformed_bodies_are_4xx(warren, key):
    h = {"Authorization": f"Bearer {key}"}
    for body in [b"{", b"[]", b'{"path": 1, "content": "x"}', b'{"content": "x"}']:
        r = httpx.post(f"{warren.base_url}/write", headers=h, content=body)
        assert 400 <= r.status_code < 500, body
        assert r.json()["detail"]
    r = httpx.post(f"{warren.base_url}/delete", headers=h, json={"path": ""})
    assert r.status_code == 400


def test_no_redirects(warren, key):
    h = {"Authorization": f"Bearer {key}"}
    for path in ["/v1/files/", "/v1/me/", "/files", "/write/"]:
        r = httpx.get(f"{warren.base_url}{path}", headers=h, follow_redirects=False)
        assert not r.is_redirect, path
        assert r.status_code in (404, 405), path
