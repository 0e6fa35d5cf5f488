//! Nodes sharing one PostgreSQL database and one store (feature `pg-tests`): a change made
//! through any node holds on every node before the call that made it returns, and a node cut
//! off from the database fences itself. Each test runs two in-process servers, as two nodes.
#![cfg(feature = "pg-tests")]

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;

use reqwest::StatusCode;
use serde_json::json;
use support::{Client, Gate, TestServer};
use warren::coord::ClusterSettings;

/// Short timers, so a fenced node shows within the test.
const SETTINGS: ClusterSettings = ClusterSettings {
    poll: Duration::from_millis(50),
    fence_after: Duration::from_millis(1000),
    dead_after: Duration::from_millis(1500),
    lease: Duration::from_millis(1500),
};

/// Two nodes on one new database and one store; node `b` reaches the database through a gate
/// when `gate_b`.
async fn pair(gate_b: bool) -> (TestServer, TestServer, Option<Gate>) {
    let (a, b, _, gate) = pair_with(false, gate_b, |_| {}).await;
    (a, b, gate)
}

/// An object store whose live-file publishes return only some time after the bytes are in
/// place: it widens the window between a write's publish and its commit.
#[derive(Debug)]
struct SlowPublish(std::sync::Arc<dyn object_store::ObjectStore>);

impl std::fmt::Display for SlowPublish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlowPublish({})", self.0)
    }
}

impl SlowPublish {
    async fn linger(location: &object_store::path::Path) {
        if location.as_ref().contains("/files/") {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for SlowPublish {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        let r = self.0.put_opts(location, payload, opts).await;
        Self::linger(location).await;
        r
    }
    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.0.get_opts(location, options).await
    }
    async fn delete(&self, location: &object_store::path::Path) -> object_store::Result<()> {
        self.0.delete(location).await
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
    ) -> object_store::Result<()> {
        self.0.copy(from, to).await
    }
    async fn rename(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
    ) -> object_store::Result<()> {
        let r = self.0.rename(from, to).await;
        Self::linger(to).await;
        r
    }
    async fn copy_if_not_exists(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
    ) -> object_store::Result<()> {
        self.0.copy_if_not_exists(from, to).await
    }
}

/// Two nodes with `adjust`ed settings, each through a gate when asked.
async fn pair_with(
    gate_a: bool,
    gate_b: bool,
    adjust: fn(&mut warren::config::Config),
) -> (TestServer, TestServer, Option<Gate>, Option<Gate>) {
    let first = tempfile::tempdir().unwrap();
    let database = support::database_url(first.path());
    let storage = support::storage_url(first.path());
    let gate = |on: bool| {
        let database = database.clone();
        async move {
            match on {
                true => Some(Gate::start(Gate::upstream_of(&database)).await),
                false => None,
            }
        }
    };
    let (gate_a, gate_b) = (gate(gate_a).await, gate(gate_b).await);
    let node = |gate: &Option<Gate>| {
        let database = gate
            .as_ref()
            .map_or(database.clone(), |g| g.route(&database));
        node_config(database, storage.clone(), adjust)
    };
    let a = TestServer::start_with(first, node(&gate_a)).await;
    let b = TestServer::start_with(tempfile::tempdir().unwrap(), node(&gate_b)).await;
    settle(&a).await;
    (a, b, gate_a, gate_b)
}

/// The configuration of a node on `database` and `storage`, with the short timers, `adjust`ed.
fn node_config(
    database: String,
    storage: String,
    adjust: fn(&mut warren::config::Config),
) -> impl Fn(&std::path::Path) -> warren::config::Config {
    move |d| {
        let mut c = warren::config::Config {
            database_url: database.clone(),
            storage_url: storage.clone(),
            cluster: SETTINGS,
            ..support::config(d)
        };
        adjust(&mut c);
        c
    }
}

/// Waits until both nodes of the pair `a` is in are polling.
async fn settle(a: &TestServer) {
    wait_for("both nodes in the cluster", || async {
        live_nodes(a).await == 2
    })
    .await;
}

/// A pair whose node `a` publishes live files slowly (see [`SlowPublish`]).
async fn slow_pair() -> (TestServer, TestServer) {
    let first = tempfile::tempdir().unwrap();
    let node = node_config(
        support::database_url(first.path()),
        support::storage_url(first.path()),
        |_| {},
    );
    let config = node(first.path());
    let opened = warren_storage::BlobStore::open(&config.storage_url).unwrap();
    let slow = warren_storage::BlobStore::new(
        std::sync::Arc::new(SlowPublish(std::sync::Arc::clone(opened.object_store()))),
        opened.layout().root().clone(),
    );
    let a = TestServer::start_with_blobs(first, config, slow).await;
    let b = TestServer::start_with(tempfile::tempdir().unwrap(), node).await;
    settle(&a).await;
    (a, b)
}

/// The nodes polling the database `srv` uses.
async fn live_nodes(srv: &TestServer) -> usize {
    let feed = srv.services.meta.cluster_store().unwrap();
    let now = feed.now().await.unwrap();
    // Every live node is behind a time far in the future.
    let far = warren::ids::Micros(now.0 + 3_600_000_000);
    feed.behind("nobody", far, Duration::from_secs(60))
        .await
        .unwrap()
        .len()
}

/// Polls `cond` until it holds, failing after 20 s.
async fn wait_for<F, Fut>(what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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

async fn status(c: &Client, path: &str) -> StatusCode {
    c.read(path).await.status
}

/// Revoked through node B, a key's exec running on node A is dead, and A refuses the key
/// (whose verification it had cached), before B's DELETE returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_on_one_node_ends_the_key_on_the_other_before_it_returns() {
    let (a, b, _) = pair(false).await;
    let key = a.mint("doomed", Some("rv")).await;
    let on_a = a.client(&key, Some("rv"));
    on_a.write("seen.txt", "x").await; // A has verified and cached the key
    let exec = {
        let on_a = on_a.clone();
        tokio::spawn(async move { on_a.exec("sleep 30").await })
    };
    wait_for("the exec running on A", || async {
        a.services.running.count() == 1
    })
    .await;

    let id = key_id(&b, "doomed").await;
    let started = Instant::now();
    let r = b
        .admin()
        .delete(&format!("/v1/workspaces/{}/keys/{id}", b.ws))
        .await;
    let took = started.elapsed();
    assert!(r.status.is_success(), "{:?}", r.json);
    // Checked straight after the DELETE returned, before anything else can catch up.
    assert_eq!(a.services.running.count(), 0, "A still runs the exec");
    assert_eq!(status(&on_a, "seen.txt").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        exec.await.unwrap().status,
        StatusCode::UNAUTHORIZED,
        "the exec ended as revoked"
    );
    assert!(took < SETTINGS.dead_after, "the DELETE took {took:?}");
}

/// A key rotated through one node stops working on the other at once, and its new secret
/// works there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_on_one_node_holds_on_the_other() {
    let (a, b, _) = pair(false).await;
    let key = a.mint("turning", Some("rot")).await;
    let old_on_b = b.client(&key, Some("rot"));
    assert_eq!(old_on_b.write("f.txt", "1").await.status, StatusCode::OK);
    let id = key_id(&a, "turning").await;
    let r = a
        .admin()
        .post(
            &format!("/v1/workspaces/{}/keys/{id}/rotate", a.ws),
            json!({}),
        )
        .await;
    assert!(r.status.is_success(), "{:?}", r.json);
    assert_eq!(status(&old_on_b, "f.txt").await, StatusCode::UNAUTHORIZED);
    let new_key = r.json["api_key"].as_str().unwrap();
    assert_eq!(
        status(&b.client(new_key, Some("rot")), "f.txt").await,
        StatusCode::OK
    );
}

/// A namespace deleted through one node is gone on the other when the call returns; restored
/// through the other, it is back on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namespace_deleted_on_one_node_is_gone_on_the_other() {
    let (a, b, _) = pair(false).await;
    let alice = a.agent("alice").await;
    alice.write("a.txt", "hello").await;
    // A workspace-wide key: deleting the namespace does not revoke it.
    let ops = a.mint("ops", None).await;
    let read_on = |srv: &TestServer| {
        let c = srv.client(&ops, Some("alice"));
        async move { c.read("a.txt").await.status }
    };
    assert_eq!(read_on(&a).await, StatusCode::OK);
    assert_eq!(read_on(&b).await, StatusCode::OK);

    let ns_url = |srv: &TestServer| format!("/v1/workspaces/{}/namespaces/alice", srv.ws);
    let r = b.admin().delete(&ns_url(&b)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(read_on(&a).await, StatusCode::NOT_FOUND);

    let r = a
        .admin()
        .post(&format!("{}/restore", ns_url(&a)), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(read_on(&b).await, StatusCode::OK);
}

/// Node B cut off from the database fences itself: within its fence time it refuses
/// authenticated requests (503) and ends its execs. A revocation through A meanwhile returns
/// within the bound, not waiting on B forever. Healed, B catches up: the revoked key is 401
/// there, the others work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_fences_itself_and_does_not_hold_up_a_revocation() {
    let (a, b, gate) = pair(true).await;
    let gate = gate.unwrap();
    let doomed = a.mint("doomed", Some("part")).await;
    let keeper = a.mint("keeper", Some("part")).await;
    let doomed_on_b = b.client(&doomed, Some("part"));
    let keeper_on_b = b.client(&keeper, Some("part"));
    keeper_on_b.write("k.txt", "k").await;
    assert_eq!(status(&doomed_on_b, "k.txt").await, StatusCode::OK);
    let exec = {
        let c = doomed_on_b.clone();
        tokio::spawn(async move { c.exec("sleep 30").await })
    };
    wait_for("the exec running on B", || async {
        b.services.running.count() == 1
    })
    .await;

    gate.cut();
    let cut_at = Instant::now();
    let id = key_id(&a, "doomed").await;
    let r = a
        .admin()
        .delete(&format!("/v1/workspaces/{}/keys/{id}", a.ws))
        .await;
    assert!(r.status.is_success(), "{:?}", r.json);
    let bound = SETTINGS.dead_after + SETTINGS.poll * 4;
    assert!(
        cut_at.elapsed() < bound,
        "the revocation waited {:?} for a node that was cut off",
        cut_at.elapsed()
    );
    // By then B has fenced itself: the cached key is refused, the exec is over.
    assert!(b.services.coord.fenced(), "B did not fence itself");
    // A load balancer's probe sees it too, and routes around B; A stays ready.
    let ready = b.anonymous().get("/readyz").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        ready.json
    );
    assert_eq!(
        ready.json["checks"]["cluster"], "fenced",
        "{:?}",
        ready.json
    );
    assert_eq!(a.anonymous().get("/readyz").await.status, StatusCode::OK);
    let r = doomed_on_b.read("k.txt").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.json);
    assert!(!r.detail().is_empty());
    let ended = exec.await.unwrap();
    assert_ne!(ended.status, StatusCode::OK, "{:?}", ended.json);
    assert_eq!(b.services.running.count(), 0);

    gate.heal();
    wait_for("B current again", || async { !b.services.coord.fenced() }).await;
    let ready = b.anonymous().get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.json);
    assert_eq!(
        status(&doomed_on_b, "k.txt").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(&keeper_on_b, "k.txt").await, StatusCode::OK);
}

/// A node that could not poll because its process was busy (its runtime blocked past the
/// fence time), while the database was there all along, catches up on the next request
/// instead of refusing it, and ends nothing.
#[tokio::test]
async fn a_node_that_was_only_busy_catches_up_instead_of_fencing() {
    let (a, _b, _) = pair(false).await;
    let agent = a.agent("busy").await;
    agent.write("f.txt", "f").await;
    // Blocks this test's one runtime thread, which both nodes' tasks run on.
    std::thread::sleep(SETTINGS.fence_after + Duration::from_millis(300));
    assert!(a.services.coord.fenced(), "the node looks stale");
    assert_eq!(status(&agent, "f.txt").await, StatusCode::OK);
    assert!(!a.services.coord.fenced());
}

/// Every node of a cluster must hash keys alike and reach the same bytes, so a server on
/// PostgreSQL refuses to start without `WARREN_SECRET`, or with storage that only it sees.
#[tokio::test]
async fn a_shareable_database_needs_a_shared_secret_and_shared_storage() {
    let dir = tempfile::tempdir().unwrap();
    let database = support::database_url(dir.path());
    let serve = |secret: Option<&str>, extra: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--database", &database])
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            .env_remove("WARREN_SECRET")
            .env_remove("WARREN_STORAGE")
            .env_remove("WARREN_SHARED_STORAGE")
            .kill_on_drop(true);
        if let Some(s) = secret {
            cmd.env("WARREN_SECRET", s);
        }
        cmd.output()
    };
    for (secret, extra, why) in [
        (None, &[][..], "WARREN_SECRET"),
        (
            Some("a-secret-a-secret-a-secret-a-secret-0"),
            &[][..],
            "--shared-storage",
        ),
        (
            Some("a-secret-a-secret-a-secret-a-secret-0"),
            &["--storage", "memory://"][..],
            "--shared-storage",
        ),
    ] {
        let out = serve(secret, extra).await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {secret:?} {extra:?}");
        assert!(stderr.contains(why), "{stderr}");
    }
}

/// Execs on one namespace take turns across the cluster, and each sees what the one before it
/// committed on the other node: a read-modify-write counter bumped by execs spread over both
/// nodes at once ends exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn execs_on_one_namespace_take_turns_across_nodes() {
    let (a, b, _) = pair(false).await;
    let key = a.mint("counter", Some("count")).await;
    let on = [a.client(&key, Some("count")), b.client(&key, Some("count"))];
    on[0].write("c", "0").await;
    let runs: Vec<_> = (0..8)
        .map(|i| {
            let c = on[i % 2].clone();
            tokio::spawn(async move {
                c.sh("n=$(cat workspace/c); sleep 0.05; echo $((n+1)) > workspace/c")
                    .await
            })
        })
        .collect();
    for r in runs {
        r.await.unwrap();
    }
    assert_eq!(on[1].read("c").await.json["content"], "8\n");
    assert_eq!(on[0].sh("cat workspace/c").await, "8\n");
}

/// A node's warm working copy catches up with what another node changed since its last exec,
/// removals included (read from the tree's journal): files written, a directory deleted and a
/// file made a directory through A are exactly what an exec on B sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exec_sees_every_change_made_through_another_node() {
    let (a, b, _) = pair(false).await;
    let key = a.mint("journal", Some("journal")).await;
    let (on_a, on_b) = (
        a.client(&key, Some("journal")),
        b.client(&key, Some("journal")),
    );
    for path in ["keep", "d/x", "d/y", "f"] {
        assert_eq!(on_a.write(path, path).await.status, StatusCode::OK);
    }
    let listing = "cd workspace && find . -type f | sort";
    assert_eq!(on_b.sh(listing).await, "./d/x\n./d/y\n./f\n./keep\n");
    assert_eq!(on_a.remove("d").await.status, StatusCode::OK);
    assert_eq!(on_a.remove("f").await.status, StatusCode::OK);
    assert_eq!(on_a.write("f/inner", "i").await.status, StatusCode::OK);
    assert_eq!(on_a.write("keep", "kept").await.status, StatusCode::OK);
    assert_eq!(
        on_b.sh(&format!("{listing}; cat keep")).await,
        "./f/inner\n./keep\nkept"
    );
}

/// The holder of the retention lease, and its token, read in the database of the pair whose
/// first node is `srv`.
async fn retention_lease(srv: &TestServer) -> Option<(String, i64)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&support::database_url(srv.dir.path()))
        .await
        .unwrap();
    sqlx::query_as("SELECT holder, token FROM leases WHERE name = 'retention'")
        .fetch_optional(&mut conn)
        .await
        .unwrap()
}

/// The retention sweeps run on one node, the lease holder. Cut off from the database, it loses
/// the lease; the other node takes it within the lease term and purges a namespace deleted
/// meanwhile, once, with its proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_node_sweeps_and_another_takes_over_when_it_is_cut_off() {
    let (a, b, gate_a, gate_b) = pair_with(true, true, |c| {
        c.retention.purge_after = Duration::from_millis(300);
        c.retention.sweep_interval = Duration::from_millis(100);
    })
    .await;
    wait_for("a retention leader", || async {
        retention_lease(&a).await.is_some()
    })
    .await;
    let (holder, token) = retention_lease(&a).await.unwrap();
    let ids = [
        a.services.coord.node().unwrap(),
        b.services.coord.node().unwrap(),
    ];
    assert!(
        ids.contains(&holder.as_str()),
        "{holder} is not a live node"
    );
    // Cut the leader off; the other node deletes a namespace and waits for its purge.
    let (leader_gate, other) = if holder == ids[0] {
        (gate_a.as_ref().unwrap(), &b)
    } else {
        (gate_b.as_ref().unwrap(), &a)
    };
    let tenant = other.agent("brief").await;
    tenant.write("f.txt", "f").await;
    leader_gate.cut();
    let cut_at = Instant::now();
    let r = other
        .admin()
        .delete(&format!("/v1/workspaces/{}/namespaces/brief", other.ws))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let purged = || async {
        let feed = other
            .admin()
            .get(&format!(
                "/v1/workspaces/{}/events?types=namespace.purged",
                other.ws
            ))
            .await;
        feed.json["events"].as_array().unwrap().clone()
    };
    wait_for("the purge by the new leader", || async {
        !purged().await.is_empty()
    })
    .await;
    assert!(
        cut_at.elapsed() < SETTINGS.lease * 3,
        "took over after {:?}",
        cut_at.elapsed()
    );
    let events = purged().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["objects"], 1, "{events:?}");
    let (new_holder, new_token) = retention_lease(&a).await.unwrap();
    assert_eq!(Some(new_holder.as_str()), other.services.coord.node());
    assert!(new_token > token, "a new reign has a new token");
    leader_gate.heal();
}

/// Starts a node process on `database` and `storage` sweeping fast, with a short sweeper
/// lease; returns once it listens.
async fn start_node(
    dir: &std::path::Path,
    database: &str,
    storage: &str,
) -> support::ServerProcess {
    // The sandbox uid must reach working copies below the data directory.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let data_dir = dir.to_str().unwrap();
    support::ServerProcess::start(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        &[
            ("WARREN_DATABASE", database),
            ("WARREN_STORAGE", storage),
            ("WARREN_SHARED_STORAGE", "true"),
            ("WARREN_SECRET", support::SECRET),
            ("WARREN_ADMIN_KEY", support::ADMIN_KEY),
            ("WARREN_PURGE_AFTER", "1s"),
            ("WARREN_SWEEP_INTERVAL", "100ms"),
            ("WARREN_CLUSTER_LEASE", "2s"),
            ("RUST_LOG", "warn"),
        ],
        &dir.join("node.log"),
    )
    .await
}

/// The state of namespace `ns` and the retention lease's holder, in `database`.
async fn purge_state(db: &mut sqlx::PgConnection, ns: &str) -> (Option<String>, Option<String>) {
    let state = sqlx::query_scalar("SELECT state FROM namespaces WHERE name = $1")
        .bind(ns)
        .fetch_optional(&mut *db)
        .await
        .unwrap();
    let holder = sqlx::query_scalar("SELECT holder FROM leases WHERE name = 'retention'")
        .fetch_optional(&mut *db)
        .await
        .unwrap();
    (state, holder)
}

/// Real processes: the sweeper leader is killed (SIGKILL) in the middle of a purge, and the
/// other node, once the dead leader's lease runs out, takes the sweeps over and finishes the
/// purge. Its proof counts every object exactly once (what the purge counted before its
/// first removal, not what the second leader found left), and nothing of the namespace is
/// left in storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sweeper_killed_mid_purge_is_replaced_and_the_purge_counted_once() {
    use sqlx::Connection;
    const FILES: usize = 1200;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let database = support::database_url(dir_a.path());
    let storage = support::storage_url(dir_a.path());
    let mut db = sqlx::PgConnection::connect(&database).await.unwrap();

    // The first node alone takes the lease; the second joins after.
    let mut leader = start_node(dir_a.path(), &database, &storage).await;
    wait_for("a sweeper leader", || async {
        let holder: Option<String> =
            sqlx::query_scalar("SELECT holder FROM leases WHERE name = 'retention'")
                .fetch_optional(&mut sqlx::PgConnection::connect(&database).await.unwrap())
                .await
                .unwrap();
        holder.is_some()
    })
    .await;
    let (_, first_holder) = purge_state(&mut db, "doomed").await;
    let other = start_node(dir_b.path(), &database, &storage).await;

    let me = other.client.get("/v1/me").await;
    let ws = me.json["workspace_id"].as_str().unwrap().to_owned();
    let minted = other
        .client
        .post(
            &format!("/v1/workspaces/{ws}/keys"),
            json!({ "name": "doomed", "namespace": "doomed", "admin": false }),
        )
        .await;
    let key = minted.json["api_key"].as_str().expect("a minted key");
    let tenant = Client::at(&other.base, Some(key), Some("doomed"));
    futures::stream::iter(0..FILES)
        .for_each_concurrent(8, |i| {
            let tenant = &tenant;
            async move {
                let r = tenant
                    .write(&format!("d{}/f{i}.txt", i % 10), "0123456789")
                    .await;
                assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
            }
        })
        .await;
    let r = other
        .client
        .delete(&format!("/v1/workspaces/{ws}/namespaces/doomed"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);

    // Kill the leader as soon as its purge has begun.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (state, _) = purge_state(&mut db, "doomed").await;
        if state.as_deref() == Some("purging") {
            break;
        }
        assert_ne!(
            state.as_deref(),
            Some("purged"),
            "purged before it could be cut short"
        );
        assert!(Instant::now() < deadline, "the purge never began");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let blobs = warren_storage::BlobStore::open(&storage).unwrap();
    let (ws_id, ns) = (
        warren_storage::WorkspaceId::parse(&ws).unwrap(),
        warren_storage::Namespace::parse("doomed").unwrap(),
    );
    let left = || async { blobs.list(&ws_id, &ns).count().await };
    // Its first removals show in storage.
    while left().await == FILES {
        assert!(Instant::now() < deadline, "the purge removed nothing");
    }
    leader.child.start_kill().unwrap();
    leader.child.wait().await.unwrap();
    let killed_at = Instant::now();
    let left_at_kill = left().await;
    assert!(
        left_at_kill > 0 && left_at_kill < FILES,
        "the kill must land mid-purge: {left_at_kill} of {FILES} objects left"
    );

    let proofs = || async {
        let r = other
            .client
            .get(&format!(
                "/v1/workspaces/{ws}/events?types=namespace.purged"
            ))
            .await;
        r.json["events"].as_array().unwrap().clone()
    };
    wait_for("the purge, finished by the other node", || async {
        !proofs().await.is_empty()
    })
    .await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "took over after {:?}",
        killed_at.elapsed()
    );
    let proofs = proofs().await;
    assert_eq!(proofs.len(), 1, "{proofs:?}");
    assert_eq!(proofs[0]["data"]["objects"], FILES, "{proofs:?}");
    assert_eq!(proofs[0]["data"]["bytes"], FILES * 10, "{proofs:?}");
    assert_eq!(
        left().await,
        0,
        "nothing of the namespace is left in storage"
    );
    let (state, holder) = purge_state(&mut db, "doomed").await;
    assert_eq!(state.as_deref(), Some("purged"));
    assert_ne!(holder, first_holder, "the surviving node leads now");
}

/// Writes of one path through both nodes at once stay whole: afterwards the listed size, the
/// downloaded bytes and the content agree (no row describing the other node's bytes). And a
/// delete of a directory on one node while the other writes below it leaves no listed file
/// without its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tree_changes_through_two_nodes_stay_whole() {
    let (a, b) = slow_pair().await;
    let key = a.mint("racer", Some("race")).await;
    let on = [a.client(&key, Some("race")), b.client(&key, Some("race"))];
    // Rounds of one write through each node at once (node a's publish lingers, so without
    // a lock that spans the nodes b's write lands between a's publish and a's commit).
    for round in 1..=10 {
        let writes: Vec<_> = on
            .iter()
            .enumerate()
            .map(|(n, c)| {
                let c = c.clone();
                let size = round * 100 + n * 7;
                tokio::spawn(async move { c.upload("same.bin", vec![b'x'; size]).await.status })
            })
            .collect();
        for w in writes {
            assert_eq!(w.await.unwrap(), StatusCode::OK);
        }
        for c in &on {
            let listed = c.list("workspace/", true).await;
            let entry = &listed.json["entries"][0];
            let bytes = c.download("same.bin").await.bytes;
            assert_eq!(entry["size_bytes"], bytes.len(), "round {round}: {entry}");
        }
    }

    let rounds: Vec<_> = (0..10)
        .map(|i| {
            let (writer, deleter) = (on[i % 2].clone(), on[(i + 1) % 2].clone());
            tokio::spawn(async move {
                let w = writer.write(&format!("d/x{i}"), "x").await.status;
                let d = deleter.remove("d").await.status;
                (w, d)
            })
        })
        .collect();
    for r in rounds {
        r.await.unwrap();
    }
    for c in &on {
        for path in c.paths("workspace/", true).await {
            let rel = path.trim_start_matches("workspace/");
            if rel.starts_with("d/") {
                assert_eq!(c.download(rel).await.status, StatusCode::OK, "{path}");
            }
        }
    }
}

/// The next data frame of an event stream.
async fn next_event(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buf: &mut String,
) -> serde_json::Value {
    use futures::StreamExt;
    loop {
        if let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                return serde_json::from_str(data).unwrap();
            }
            continue; // a keepalive comment
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a frame within 10 s")
            .unwrap()
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

/// The ids of `file.written` events as `srv` pages its feed, `limit` at a time.
async fn feed_ids(srv: &TestServer, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("types=file.written&limit={limit}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let r = srv
            .admin()
            .get(&format!("/v1/workspaces/{}/events?{q}", srv.ws))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
        for e in r.json["events"].as_array().unwrap() {
            ids.push(e["id"].as_str().unwrap().to_owned());
        }
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}

/// Every event, wherever its change was made, once: the feed paged through either node gives
/// the same events in the same order, and the live stream on one node carries the other's
/// too, oldest first. An operation through one node is in the other's audit trail within a
/// second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_serves_one_feed_one_stream_and_one_audit_trail() {
    let (a, b, _) = pair(false).await;
    let key = a.mint("many", Some("feed")).await;
    let on = [a.client(&key, Some("feed")), b.client(&key, Some("feed"))];
    let stream = b
        .admin()
        .request(
            reqwest::Method::GET,
            &format!("/v1/workspaces/{}/webhooks/stream", b.ws),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let (mut stream, mut buf) = (stream.bytes_stream(), String::new());
    assert_eq!(next_event(&mut stream, &mut buf).await["type"], "connected");

    // Writes through both nodes at once.
    let writes: Vec<_> = (0..12)
        .map(|i| {
            let c = on[i % 2].clone();
            tokio::spawn(async move { c.write(&format!("f{i}.txt"), "x").await.status })
        })
        .collect();
    for w in writes {
        assert_eq!(w.await.unwrap(), StatusCode::OK);
    }
    let from_a = feed_ids(&a, 5).await;
    let from_b = feed_ids(&b, 3).await;
    assert_eq!(from_a.len(), 12, "{from_a:?}");
    assert_eq!(from_a, from_b, "both nodes page the same feed");

    // The stream on B carried every write, A's too, once each, oldest first.
    let mut streamed = Vec::new();
    while streamed.len() < 12 {
        let e = next_event(&mut stream, &mut buf).await;
        if e["type"] == "file.written" {
            streamed.push(e["id"].as_str().unwrap().to_owned());
        }
    }
    let mut oldest_first = from_a.clone();
    oldest_first.reverse();
    assert_eq!(streamed, oldest_first);

    // An operation through A shows in B's audit trail within a second.
    assert_eq!(on[0].read("f0.txt").await.status, StatusCode::OK);
    let asked = Instant::now();
    wait_for("A's read in B's audit trail", || async {
        let r = b
            .admin()
            .get(&format!(
                "/v1/workspaces/{}/audit?namespace=feed&operation=read",
                b.ws
            ))
            .await;
        !r.json["records"].as_array().unwrap().is_empty()
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "visible after {:?}",
        asked.elapsed()
    );
}

/// 200 events written through both nodes, to a receiver that refuses each event's first
/// attempt: every attempt is sent by exactly one node, so each event arrives exactly twice
/// (the refused attempt and its retry), and the database agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_delivery_attempt_is_sent_by_one_node() {
    use sqlx::Connection;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    const EVENTS: usize = 200;
    let (a, b, _) = pair(false).await;
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let seen = Arc::clone(&seen);
            move |headers: axum::http::HeaderMap| async move {
                let id = headers["x-trove-event-id"].to_str().unwrap().to_owned();
                let mut seen = seen.lock().unwrap();
                let n = seen.entry(id).or_default();
                *n += 1;
                match *n {
                    1 => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::OK,
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let r = a
        .admin()
        .post(
            &format!("/v1/workspaces/{}/webhooks", a.ws),
            json!({ "url": url, "events": ["file.written"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);

    let key = a.mint("hooked", Some("hooks")).await;
    let on = [a.client(&key, Some("hooks")), b.client(&key, Some("hooks"))];
    futures::stream::iter(0..EVENTS)
        .for_each_concurrent(8, |i| {
            let c = on[i % 2].clone();
            async move {
                let r = c.write(&format!("f{i}.txt"), "x").await;
                assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
            }
        })
        .await;
    // Settled: every delivery recorded delivered and none claimed, so nothing is in flight.
    let mut db = sqlx::PgConnection::connect(&support::database_url(a.dir.path()))
        .await
        .unwrap();
    const SETTLED: &str = "SELECT count(*) FILTER (WHERE d.state = 'delivered') = $1
                AND count(*) FILTER (WHERE d.state <> 'delivered') = 0
                AND bool_and(w.busy_until IS NULL)
         FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let settled: bool = sqlx::query_scalar(SETTLED)
            .bind(EVENTS as i64)
            .fetch_one(&mut db)
            .await
            .unwrap();
        if settled {
            break;
        }
        let got = seen.lock().unwrap().len();
        assert!(
            Instant::now() < deadline,
            "deliveries did not settle ({got} seen)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM deliveries")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(attempts, vec![2; EVENTS], "two attempts recorded for each");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), EVENTS);
    let twice = seen.values().filter(|&&n| n == 2).count();
    assert_eq!(twice, EVENTS, "each attempt sent once: {seen:?}");
}
