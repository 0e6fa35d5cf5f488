//! `POST /v1/exec` end to end: a real server on a loopback port, real bubblewrap sandboxes,
//! changes synced back and visible through the file API and the events feed.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::TestServer;

#[tokio::test]
async fn runs_bash_in_the_parent_of_workspace_and_syncs_every_kind_of_change() {
    let srv = TestServer::start().await;
    let a = srv.agent("alpha").await;
    a.write("keep.txt", "kept\n").await;
    a.write("old/inner.txt", "inner\n").await;
    a.write("gone.txt", "bye\n").await;

    let r = a
        .exec("pwd; ls workspace; cat workspace/keep.txt; echo oops >&2; exit 7")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(r.json["exit_code"], 7);
    assert_eq!(
        r.json["stdout"],
        "/home/agent\ngone.txt\nkeep.txt\nold\nkept\n"
    );
    assert_eq!(r.json["stderr"], "oops\n");
    assert!(r.json["duration_ms"].is_u64());

    a.sh(
        "cd workspace && echo new > new.txt && echo more >> keep.txt && rm gone.txt \
         && mv old renamed && mkdir -p empty/deeper && printf '#!/bin/sh\\necho hi\\n' > run.sh \
         && chmod +x run.sh && ln -s keep.txt link && ln -s /etc/passwd abs",
    )
    .await;
    assert_eq!(a.read("new.txt").await.json["content"], "new\n");
    assert_eq!(a.read("keep.txt").await.json["content"], "kept\nmore\n");
    assert_eq!(a.read("renamed/inner.txt").await.json["content"], "inner\n");
    assert_eq!(a.read("gone.txt").await.status, StatusCode::NOT_FOUND);
    assert_eq!(a.read("old/inner.txt").await.status, StatusCode::NOT_FOUND);
    let all = a.paths("", true).await;
    for p in [
        "workspace/empty",
        "workspace/empty/deeper",
        "workspace/link",
        "workspace/abs",
        "workspace/run.sh",
    ] {
        assert!(all.contains(&p.to_owned()), "{p} missing from {all:?}");
    }
    // The next exec sees all of it: links as links, the executable bit kept.
    let out = a
        .sh("cd workspace && readlink link abs && cat link && ./run.sh && ls -d empty/deeper && test ! -e gone.txt && echo ok")
        .await;
    assert_eq!(
        out,
        "keep.txt\n/etc/passwd\nkept\nmore\nhi\nempty/deeper\nok\n"
    );
}

#[tokio::test]
async fn changes_emit_events_attributed_to_the_key() {
    let srv = TestServer::start().await;
    let a = srv.agent("ev").await;
    a.write("x.txt", "x").await;
    a.sh("echo hello > workspace/made.txt; rm workspace/x.txt; echo printed")
        .await;
    let r = srv
        .admin()
        .get(&format!(
            "/v1/workspaces/{}/events?namespace=ev&limit=10",
            srv.ws
        ))
        .await;
    let events = r.json["events"].as_array().unwrap().clone();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    // Newest first: the scan's changes in path order, then the completion.
    assert_eq!(
        kinds[..3],
        ["exec.completed", "file.deleted", "file.written"],
        "{kinds:?}"
    );
    let done = &events[0];
    assert_eq!(done["data"]["exit_code"], 0);
    assert_eq!(done["data"]["stdout"], "printed\n");
    assert_eq!(done["data"]["stdin_bytes"], 0);
    let written = events
        .iter()
        .find(|e| e["type"] == "file.written" && e["data"]["source"] == "exec")
        .unwrap();
    assert_eq!(written["data"]["path"], "workspace/made.txt");
    assert_eq!(written["data"]["size_bytes"], 6);
    let key_id = done["key_id"].as_str().unwrap();
    assert!(events.iter().take(3).all(|e| e["key_id"] == key_id));
}

#[tokio::test]
async fn stdin_init_sh_and_limits_on_input() {
    let srv = TestServer::start().await;
    let a = srv.agent("io").await;
    let r = a
        .post(
            "/v1/exec",
            json!({ "command": "wc -c; cat", "stdin": "abc" }),
        )
        .await;
    assert_eq!(r.json["stdout"], "3\n");
    let r = a.post("/v1/exec", json!({ "command": "cat" })).await;
    assert_eq!(r.json["stdout"], "", "no stdin reads /dev/null");
    let big = "x".repeat(1024 * 1024 + 1);
    let r = a
        .post("/v1/exec", json!({ "command": "wc -c", "stdin": big }))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.json);
    let r = a
        .post(
            "/v1/exec",
            json!({ "command": "wc -c", "stdin": "x".repeat(1024 * 1024) }),
        )
        .await;
    assert_eq!(r.json["stdout"], "1048576\n");

    a.write(".trove/init.sh", "export GREETING=hello\ncd workspace\n")
        .await;
    assert_eq!(
        a.sh("echo $GREETING; pwd").await,
        "hello\n/home/agent/workspace\n"
    );
    // exec_chain's shape: state carries from one step to the next.
    assert_eq!(
        a.sh("{ cd /tmp; } && { X=1; } && { echo $PWD $X; }").await,
        "/tmp 1\n"
    );
    let r = a
        .post("/v1/exec", json!({ "command": "echo a\u{0}b" }))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.json);
    let r = a.post("/v1/exec", json!({ "stdin": "no command" })).await;
    assert!(r.status.is_client_error());
}

#[tokio::test]
async fn legacy_text_exec() {
    let srv = TestServer::start().await;
    let a = srv.agent("legacy").await;
    let r = a.post("/exec", json!({ "command": "echo hi" })).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(String::from_utf8_lossy(&r.bytes), "hi\n");
    let r = a.post("/exec", json!({ "command": "true" })).await;
    assert_eq!(String::from_utf8_lossy(&r.bytes), "(no output)");
    let r = a
        .post(
            "/exec",
            json!({ "command": "echo out; echo err >&2; exit 3" }),
        )
        .await;
    assert_eq!(String::from_utf8_lossy(&r.bytes), "[exit 3]\nerr\n\nout\n");
}

#[tokio::test]
async fn timeout_is_408_and_keeps_what_was_written() {
    let quick = |d: &std::path::Path| {
        let mut c = support::config(d);
        c.exec.sandbox.limits.timeout = Duration::from_secs(2);
        c
    };
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), quick).await;
    let a = srv.agent("slow").await;
    let started = Instant::now();
    let r = a
        .exec("echo step1 > workspace/progress.txt; sleep 60 & sleep 60")
        .await;
    assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT, "{:?}", r.json);
    assert_eq!(r.detail(), "Command timed out after 2s.");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(a.read("progress.txt").await.json["content"], "step1\n");
    // Nothing of it is left running: the namespace takes the next exec at once.
    assert_eq!(a.sh("echo next").await, "next\n");
}

#[tokio::test]
async fn a_venv_made_in_one_exec_works_in_the_next() {
    let srv = TestServer::start().await;
    let a = srv.agent("py").await;
    a.sh("python3 -m venv --without-pip workspace/.venv").await;
    let out = a
        .sh("source workspace/.venv/bin/activate && python -c 'import sys; print(sys.prefix)'")
        .await;
    assert_eq!(out, "/home/agent/workspace/.venv\n");
}

/// The id of the key named `name`, from the admin key listing.
async fn key_id(srv: &TestServer, name: &str) -> String {
    let keys = srv
        .admin()
        .get(&format!("/v1/workspaces/{}/keys", srv.ws))
        .await;
    keys.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The race a revocation used to lose: an exec authenticated before the revocation but
/// registered after its kill had looked for it. Held at exactly that point by the test hook,
/// it must not run, whether the key was revoked or rotated meanwhile.
#[tokio::test]
async fn an_exec_authenticated_before_a_revocation_does_not_run_after_it() {
    let srv = TestServer::start().await;
    let observer = srv.agent("race").await;
    for (name, revoke) in [("revoked", true), ("rotated", false)] {
        let key = srv.mint(name, Some("race")).await;
        let id = key_id(&srv, name).await;
        let pause = srv.services.running.pause_next_hold();
        let client = srv.client(&key, Some("race"));
        let marker = format!("{name}.txt");
        let command = format!("echo ran > workspace/{marker}");
        let exec = tokio::spawn(async move { client.exec(&command).await });
        pause.reached().await;

        let path = format!("/v1/workspaces/{}/keys/{id}", srv.ws);
        let r = if revoke {
            srv.admin().delete(&path).await
        } else {
            srv.admin().post(&format!("{path}/rotate"), json!({})).await
        };
        assert!(r.status.is_success(), "{:?}", r.json);
        pause.release();

        let r = exec.await.unwrap();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {:?}", r.json);
        assert_eq!(
            observer.read(&marker).await.status,
            StatusCode::NOT_FOUND,
            "{name}: the exec ran"
        );
    }
    // The hook is spent: execs run as usual.
    assert_eq!(observer.sh("echo fine").await, "fine\n");
}

/// Waits (at most 20 s) until `n` execs are running on `srv`.
async fn until_running(srv: &TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while srv.services.running.count() != n {
        assert!(Instant::now() < deadline, "{n} execs never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn revoking_a_key_kills_its_running_exec_and_discards_its_changes() {
    let srv = TestServer::start().await;
    let key = srv.mint("doomed", Some("rv")).await;
    let a = srv.client(&key, Some("rv"));
    let observer = srv.agent("rv").await;
    observer.write("before.txt", "b").await;
    let running = tokio::spawn(async move {
        let started = Instant::now();
        let r = a
            .exec("echo partial > workspace/partial.txt; sleep 25; echo late")
            .await;
        (r, started.elapsed())
    });
    // Wait until the exec has written (in its working copy, visible to nobody yet).
    until_running(&srv, 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !support::walk(&srv.dir.path().join("exec"))
        .iter()
        .any(|f| f.ends_with("partial.txt"))
    {
        assert!(Instant::now() < deadline, "the exec never wrote");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let keys = srv
        .admin()
        .get(&format!("/v1/workspaces/{}/keys", srv.ws))
        .await;
    let id = keys.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "doomed")
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = srv
        .admin()
        .delete(&format!("/v1/workspaces/{}/keys/{id}", srv.ws))
        .await;
    assert!(r.status.is_success(), "{:?}", r.json);
    // When the revoke returns, the exec is already over: nothing of it was synced.
    assert_eq!(
        observer.read("partial.txt").await.status,
        StatusCode::NOT_FOUND
    );
    let (r, took) = running.await.unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.json);
    assert!(
        took < Duration::from_secs(20),
        "the command was not killed: {took:?}"
    );
    assert_eq!(observer.paths("", true).await, ["workspace/before.txt"]);
    assert_eq!(observer.sh("ls workspace").await, "before.txt\n");
}

#[tokio::test]
async fn concurrent_execs_and_writes_on_one_namespace_lose_nothing() {
    let srv = TestServer::start().await;
    let a = srv.agent("busy").await;
    a.write("seed.txt", "seed").await;
    let runs = (0..4).map(|i| {
        let a = a.clone();
        tokio::spawn(async move {
            a.sh(&format!(
                "sleep 0.3; echo {i} > workspace/exec{i}.txt; cat workspace/seed.txt"
            ))
            .await
        })
    });
    let writer = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                assert_eq!(
                    a.write(&format!("api{i}.txt"), "w").await.status,
                    StatusCode::OK
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    for r in runs {
        assert_eq!(r.await.unwrap(), "seed");
    }
    writer.await.unwrap();
    let all = a.paths("", false).await;
    for i in 0..4 {
        assert!(all.contains(&format!("workspace/exec{i}.txt")), "{all:?}");
    }
    for i in 0..10 {
        assert!(all.contains(&format!("workspace/api{i}.txt")), "{all:?}");
    }
    // The working copy caught up with the writes made while execs ran.
    let seen = a.sh("ls workspace | wc -l").await;
    assert_eq!(seen.trim(), "15");
}

#[tokio::test]
async fn without_a_sandbox_exec_is_503_and_files_still_work() {
    let no_bwrap = |d: &std::path::Path| {
        let mut c = support::config(d);
        c.exec.sandbox.bwrap = "/nonexistent/bwrap".into();
        c
    };
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), no_bwrap).await;
    let a = srv.agent("plain").await;
    let r = a.exec("echo never").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.detail().contains("bubblewrap"), "{}", r.detail());
    assert_eq!(a.write("f.txt", "ok").await.status, StatusCode::OK);
    assert_eq!(a.read("f.txt").await.json["content"], "ok");
}

#[tokio::test]
async fn deleting_a_namespace_kills_its_execs() {
    let srv = TestServer::start().await;
    let a = srv.agent("short").await;
    a.write("f.txt", "f").await;
    let running = tokio::spawn(async move { a.exec("sleep 25").await });
    until_running(&srv, 1).await;
    let r = srv
        .admin()
        .delete(&format!("/v1/workspaces/{}/namespaces/short", srv.ws))
        .await;
    assert!(r.status.is_success(), "{:?}", r.json);
    let r = running.await.unwrap();
    assert!(r.status.is_client_error(), "{:?}", r.json);
}

#[tokio::test]
async fn what_one_exec_may_change_is_bounded_and_said() {
    let small = |d: &std::path::Path| {
        let mut c = support::config(d);
        c.exec.max_changes = 20;
        c
    };
    let srv = TestServer::start_with(tempfile::tempdir().unwrap(), small).await;
    let a = srv.agent("bounded").await;
    let r = a
        .exec("cd workspace && for i in $(seq 1 50); do echo $i > f$i; done; head -c 150000000 /dev/zero > big.bin; echo done")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let skipped = r.json["not_synced"].as_array().unwrap();
    // 51 entries: the first 20 by name are considered (big.bin among them, over the 100 MB
    // file cap), the other 31 are over the entry limit.
    assert_eq!(skipped.len(), 32, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .any(|s| s["reason"].as_str().unwrap().contains("more than 20"))
    );
    assert!(
        r.json["stderr"]
            .as_str()
            .unwrap()
            .contains("[warren] not synced")
    );
    assert_eq!(a.paths("", false).await.len(), 19);
    assert_eq!(a.read("big.bin").await.status, StatusCode::NOT_FOUND);
}

/// Files larger than one read chunk and than the small-file fetch path go through every copy
/// an exec makes (object to working copy, upper layer to object, upper layer to working copy)
/// byte for byte.
#[tokio::test]
async fn large_files_cross_every_copy_intact() {
    use sha2::{Digest, Sha256};
    let srv = TestServer::start().await;
    let a = srv.agent("big").await;
    let uploaded: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let want_up = hex::encode(Sha256::digest(&uploaded));
    assert_eq!(a.upload("up.bin", uploaded).await.status, StatusCode::OK);
    // Fetched into the working copy on the large-file path.
    let out = a.sh("sha256sum < workspace/up.bin").await;
    assert_eq!(out.split_whitespace().next(), Some(want_up.as_str()));

    // Made by the command: uploaded from the upper layer, then copied into the working copy.
    let made = a
        .sh("head -c 2500000 /dev/urandom > workspace/made.bin && sha256sum < workspace/made.bin")
        .await;
    let want_made = made.split_whitespace().next().unwrap().to_owned();
    let stored = a.download_raw("/files/made.bin").await;
    assert_eq!(stored.len(), 2_500_000);
    assert_eq!(hex::encode(Sha256::digest(&stored)), want_made);
    let again = a.sh("sha256sum < workspace/made.bin").await;
    assert_eq!(again.split_whitespace().next(), Some(want_made.as_str()));
}

/// A warm working copy follows every kind of change made through the file API between two
/// execs (it is refreshed from the tree's journal): a write, an overwrite, a directory
/// deleted, a file replaced by a directory of the same name.
#[tokio::test]
async fn a_warm_copy_follows_every_change_between_execs() {
    let srv = TestServer::start().await;
    let a = srv.agent("journal").await;
    for (path, body) in [("keep.txt", "k"), ("d/x", "x"), ("d/y", "y"), ("f", "f")] {
        assert_eq!(a.write(path, body).await.status, StatusCode::OK);
    }
    assert_eq!(
        a.sh("cd workspace && find . -type f | sort").await,
        "./d/x\n./d/y\n./f\n./keep.txt\n"
    );
    assert_eq!(a.remove("d").await.status, StatusCode::OK);
    assert_eq!(a.remove("f").await.status, StatusCode::OK);
    for (path, body) in [
        ("f/inner", "i"),
        ("new/n.txt", "n"),
        ("keep.txt", "changed"),
    ] {
        assert_eq!(a.write(path, body).await.status, StatusCode::OK);
    }
    assert_eq!(
        a.sh("cd workspace && find . | sort && cat keep.txt f/inner")
            .await,
        ".\n./f\n./f/inner\n./keep.txt\n./new\n./new/n.txt\nchangedi"
    );
}
