//! The `MetaStore` behaviour suite: every method of every sub-trait, with the promises callers
//! rely on under concurrency (pollers that see each event once while others append, delivery
//! leases that fence a stale worker, claimers that never share a delivery). Every
//! implementation must pass it unchanged; a backend joins by adding a fixture to the `stores!`
//! invocation at the bottom. Events are appended only through the changes that record them.

use std::sync::Arc;
use std::time::Duration;

use warren::coord::{Coordinator, DeleteLock, InProcess, NamespaceLock, WriteLock};
use warren::db::{
    ApprovedLogin, AttemptResult, AuditPos, AuditQuery, AuditRecord, DeviceDecision, DevicePoll,
    Entry, EntryKind, Error, EventQuery, EventRecord, FileWrite, KeyRecord, LeaseToken, LogPos,
    MetaStore, NewDeviceLogin, NewEvent, NewKey, PurgeInventory, Scope, SnapshotRecord, Swept,
    TreeChanges, TreeOp, Webhook,
};
use warren::ids::{EventId, KeyId, Micros};
use warren_storage::{Namespace, NsPath, SnapshotId, WorkspaceId};

fn ws() -> WorkspaceId {
    WorkspaceId::parse("ws-00000000000000aa").unwrap()
}

fn ns(s: &str) -> Namespace {
    Namespace::parse(s).unwrap()
}

fn p(s: &str) -> NsPath {
    NsPath::parse(s).unwrap()
}

fn ev(kind: &'static str, namespace: Option<&str>) -> NewEvent {
    NewEvent {
        id: EventId::random(),
        kind,
        workspace: ws(),
        namespace: namespace.map(ns),
        key_id: Some(KeyId::from_string("key-actor".into())),
        data: "{}".into(),
    }
}

fn file(path: &str, size: u64) -> FileWrite {
    FileWrite {
        path: p(path),
        size,
        mode: 0o644,
        mtime: Micros::now(),
        sha256: "00".repeat(32),
    }
}

/// The locks commits need; the store's contract does not depend on which coordinator made them.
fn coord() -> &'static InProcess {
    static COORD: std::sync::OnceLock<Arc<InProcess>> = std::sync::OnceLock::new();
    COORD.get_or_init(InProcess::new)
}

async fn lock_write(ws: &WorkspaceId, ns: &Namespace, file: &FileWrite) -> WriteLock {
    coord().lock_write(ws, ns, &file.path).await.unwrap()
}

/// Commits `file` in `ns` under its write lock, as the file service does.
async fn commit_file(
    store: &dyn MetaStore,
    ns: &Namespace,
    file: &FileWrite,
    event: &NewEvent,
) -> warren::db::Result<()> {
    store
        .commit_write(&lock_write(&ws(), ns, file).await, file, event)
        .await
}

async fn lock_delete(ws: &WorkspaceId, ns: &Namespace, path: &NsPath) -> DeleteLock {
    coord().lock_delete(ws, ns, path).await.unwrap()
}

async fn lock_namespace(ws: &WorkspaceId, ns: &Namespace) -> NamespaceLock {
    coord().lock_namespace(ws, ns).await.unwrap()
}

async fn setup(store: &dyn MetaStore) {
    let (got, created) = store
        .ensure_default_workspace(&ws(), "default", Micros::now())
        .await
        .unwrap();
    assert_eq!((got, created), (ws(), true));
}

async fn default_workspace_is_created_once(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let other = WorkspaceId::parse("ws-00000000000000bb").unwrap();
    let (got, created) = store
        .ensure_default_workspace(&other, "x", Micros::now())
        .await
        .unwrap();
    assert_eq!((got, created), (ws(), false));
}

async fn keys_lifecycle(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let record = KeyRecord {
        id: KeyId::from_string("key-1".into()),
        workspace: ws(),
        name: "alice".into(),
        prefix: "trove-sk-abc".into(),
        scope: Scope::Workspace,
        namespace: Some(ns("alice")),
        created_at: Micros(1),
        last_used_at: None,
        bootstrap: false,
    };
    let hash = [7u8; 32];
    store
        .insert_key(
            &NewKey {
                record: record.clone(),
                hash,
            },
            &ev("key.created", None),
        )
        .await
        .unwrap();
    let (found, stored) = store.key_by_hash(&hash).await.unwrap().unwrap();
    assert_eq!((found.id.as_str(), stored), ("key-1", hash));
    assert_eq!(found.namespace, Some(ns("alice")));

    store.touch_key(&record.id, Micros(42)).await.unwrap();
    let listed = store.list_keys(&ws()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_used_at, Some(Micros(42)));

    let new_hash = [8u8; 32];
    let (old, rotated) = store
        .rotate_key(
            &ws(),
            &record.id,
            &new_hash,
            "trove-sk-def",
            &ev("key.rotated", None),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old, hash);
    assert_eq!(rotated.prefix, "trove-sk-def");
    assert!(store.key_by_hash(&hash).await.unwrap().is_none());
    assert!(store.key_by_hash(&new_hash).await.unwrap().is_some());

    let revoked = store
        .revoke_key(&ws(), &record.id, &ev("key.revoked", None))
        .await
        .unwrap();
    assert_eq!(revoked, Some(new_hash));
    assert!(store.key_by_hash(&new_hash).await.unwrap().is_none());
    assert!(store.list_keys(&ws()).await.unwrap().is_empty());
    let again = store
        .revoke_key(&ws(), &record.id, &ev("key.revoked", None))
        .await
        .unwrap();
    assert_eq!(again, None, "a revoked key cannot be revoked twice");
    let kinds: Vec<String> = store
        .recent_events(&ws(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["key.revoked", "key.rotated", "key.created"]);
}

/// The journal: what changed after a generation is exactly what a copy at that generation
/// must apply to match the tree (written entries, removed paths that are gone), however it
/// changed: a write, a delete of a directory, a sync-back that turns a file into a directory,
/// a path deleted and written again. Pruned removals put older generations out of reach.
async fn the_journal_tells_what_changed_since_a_generation(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let a = ns("alice");
    let paths = |es: &[Entry]| {
        es.iter()
            .map(|e| e.path.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let strs = |ps: &[NsPath]| ps.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>();
    for f in ["keep.txt", "d/x", "d/y", "f", "again"] {
        write(&*store, "alice", f, "file.written").await;
    }
    let g = store.generation(&ws(), &a).await.unwrap();
    let none = store.tree_changes(&ws(), &a, g).await.unwrap().unwrap();
    assert_eq!(none, TreeChanges::default(), "nothing changed since now");

    write(&*store, "alice", "new/n.txt", "file.written").await;
    let lock = lock_delete(&ws(), &a, &p("d")).await;
    store
        .commit_delete(&lock, &ev("file.deleted", Some("alice")))
        .await
        .unwrap();
    drop(lock);
    let lock = lock_delete(&ws(), &a, &p("again")).await;
    store
        .commit_delete(&lock, &ev("file.deleted", Some("alice")))
        .await
        .unwrap();
    drop(lock);
    write(&*store, "alice", "again", "file.written").await;
    let lock = lock_namespace(&ws(), &a).await;
    store
        .commit_tree_ops(
            &lock,
            &[
                TreeOp::Delete(p("f")),
                TreeOp::Dir(p("f"), Micros::now()),
                TreeOp::File(file("f/inner", 2)),
            ],
            &[],
        )
        .await
        .unwrap();
    drop(lock);

    let c = store.tree_changes(&ws(), &a, g).await.unwrap().unwrap();
    assert_eq!(
        paths(&c.written),
        ["again", "f", "f/inner", "new", "new/n.txt"]
    );
    assert_eq!(c.written[1].kind, EntryKind::Dir);
    assert_eq!(
        strs(&c.removed),
        ["d", "d/x", "d/y"],
        "gone, and only what is gone"
    );
    // Applied to the tree as it was at `g`, the changes give the tree as it is.
    let now: Vec<String> = paths(&store.tree(&ws(), &a).await.unwrap());
    let mut rebuilt: Vec<String> = ["again", "d", "d/x", "d/y", "f", "keep.txt"]
        .into_iter()
        .map(str::to_owned)
        .filter(|p| !c.removed.iter().any(|r| r.as_str() == p))
        .filter(|p| !c.written.iter().any(|e| e.path.as_str() == p))
        .chain(paths(&c.written))
        .collect();
    rebuilt.sort();
    assert_eq!(rebuilt, now);
    // From a later generation, only what came after it.
    let g2 = store.generation(&ws(), &a).await.unwrap();
    write(&*store, "alice", "last", "file.written").await;
    let c = store.tree_changes(&ws(), &a, g2).await.unwrap().unwrap();
    assert_eq!(
        (paths(&c.written), c.removed),
        (vec!["last".to_owned()], vec![])
    );
    let other = store
        .tree_changes(&ws(), &ns("bob"), 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        other,
        TreeChanges::default(),
        "another namespace changed nothing"
    );

    // Removals forgotten: generations before them are out of the journal's reach, later
    // ones are not.
    assert_eq!(store.prune_journal(Micros(0)).await.unwrap(), 0);
    assert!(store.prune_journal(Micros(i64::MAX)).await.unwrap() >= 4);
    assert_eq!(store.tree_changes(&ws(), &a, g).await.unwrap(), None);
    let latest = store.generation(&ws(), &a).await.unwrap();
    assert_eq!(
        store.tree_changes(&ws(), &a, latest).await.unwrap(),
        Some(TreeChanges::default())
    );
}

async fn writes_create_parents_and_bump_generation(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let a = ns("alice");
    assert_eq!(store.generation(&ws(), &a).await.unwrap(), 0);
    commit_file(
        &*store,
        &a,
        &file("x/y/z.txt", 3),
        &ev("file.written", Some("alice")),
    )
    .await
    .unwrap();
    assert_eq!(store.generation(&ws(), &a).await.unwrap(), 1);
    let x = store.get_entry(&ws(), &a, &p("x")).await.unwrap().unwrap();
    assert_eq!(x.kind, EntryKind::Dir);
    let z = store
        .get_entry(&ws(), &a, &p("x/y/z.txt"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((z.kind, z.size), (EntryKind::File, 3));
    // Overwrite keeps one row and updates it.
    commit_file(
        &*store,
        &a,
        &file("x/y/z.txt", 9),
        &ev("file.written", Some("alice")),
    )
    .await
    .unwrap();
    let z = store
        .get_entry(&ws(), &a, &p("x/y/z.txt"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(z.size, 9);
    assert_eq!(store.generation(&ws(), &a).await.unwrap(), 2);
    assert_eq!(store.generation(&ws(), &ns("bob")).await.unwrap(), 0);
}

async fn conflicts_are_refused_without_side_effects(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let a = ns("alice");
    commit_file(
        &*store,
        &a,
        &file("f", 1),
        &ev("file.written", Some("alice")),
    )
    .await
    .unwrap();
    commit_file(
        &*store,
        &a,
        &file("d/g", 1),
        &ev("file.written", Some("alice")),
    )
    .await
    .unwrap();
    let before = store.recent_events(&ws(), 100).await.unwrap().len();
    // The early check and the commit refuse alike, saying which path is in the way.
    for (bad, why) in [
        ("f/under-a-file", "workspace/f is not a directory"),
        ("d", "workspace/d is a directory"),
    ] {
        for r in [
            store.check_writable(&ws(), &a, &p(bad)).await,
            commit_file(
                &*store,
                &a,
                &file(bad, 1),
                &ev("file.written", Some("alice")),
            )
            .await,
        ] {
            assert!(
                matches!(&r, Err(Error::Conflict(m)) if m == why),
                "{bad}: {r:?}"
            );
        }
    }
    assert_eq!(store.recent_events(&ws(), 100).await.unwrap().len(), before);
    assert_eq!(store.generation(&ws(), &a).await.unwrap(), 2);
}

async fn children_are_ordered_dirs_first_then_bytewise(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let a = ns("alice");
    for f in ["b.txt", "A.txt", "zdir/x", "adir/x", "a.txt", "_"] {
        commit_file(&*store, &a, &file(f, 1), &ev("file.written", Some("alice")))
            .await
            .unwrap();
    }
    let names: Vec<String> = store
        .list_children(&ws(), &a, &NsPath::root(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path.name().to_owned())
        .collect();
    assert_eq!(names, ["adir", "zdir", "A.txt", "_", "a.txt", "b.txt"]);
    let limited = store
        .list_children(&ws(), &a, &NsPath::root(), 3)
        .await
        .unwrap();
    assert_eq!(limited.len(), 3);
}

async fn delete_removes_exactly_the_subtree(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let a = ns("alice");
    for f in ["a/1", "a/b/2", "a-b/3", "ab/4", "a.txt", "b/a/5"] {
        commit_file(&*store, &a, &file(f, 1), &ev("file.written", Some("alice")))
            .await
            .unwrap();
    }
    let mut removed: Vec<String> = store
        .commit_delete(
            &lock_delete(&ws(), &a, &p("a")).await,
            &ev("file.deleted", Some("alice")),
        )
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    removed.sort();
    assert_eq!(removed, ["a/1", "a/b/2"]);
    for kept in ["a-b/3", "ab/4", "a.txt", "b/a/5"] {
        assert!(
            store
                .get_entry(&ws(), &a, &p(kept))
                .await
                .unwrap()
                .is_some(),
            "{kept}"
        );
    }
    assert!(store.get_entry(&ws(), &a, &p("a")).await.unwrap().is_none());
    let missing = store
        .commit_delete(
            &lock_delete(&ws(), &a, &p("a")).await,
            &ev("file.deleted", Some("alice")),
        )
        .await
        .unwrap();
    assert!(missing.is_none());
}

async fn namespaces_do_not_see_each_other(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    commit_file(
        &*store,
        &ns("alice"),
        &file("secret", 1),
        &ev("file.written", Some("alice")),
    )
    .await
    .unwrap();
    let b = ns("bob");
    assert!(
        store
            .get_entry(&ws(), &b, &p("secret"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .list_children(&ws(), &b, &NsPath::root(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .commit_delete(
                &lock_delete(&ws(), &b, &p("secret")).await,
                &ev("file.deleted", Some("bob"))
            )
            .await
            .unwrap()
            .is_none()
    );
}

/// An exec's sync-back can be far larger than one round trip carries: it is still one
/// transaction, all or nothing, with one generation step.
async fn large_tree_commits_are_whole(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let a = ns("alice");
    // Sync-back names every directory it creates, parents first.
    let mut ops: Vec<TreeOp> = (0..7)
        .flat_map(|d| {
            let now = Micros::now();
            [
                TreeOp::Dir(p(&format!("d{d}")), now),
                TreeOp::Dir(p(&format!("d{d}/sub")), now),
            ]
        })
        .collect();
    ops.extend((0..3000).map(|i| TreeOp::File(file(&format!("d{}/sub/file-{i:05}", i % 7), i))));
    let events: Vec<NewEvent> = (0..3000)
        .map(|_| ev("file.written", Some("alice")))
        .collect();
    let before = store.recent_events(&ws(), 10_000).await.unwrap().len();
    let (g0, g1) = store
        .commit_tree_ops(&lock_namespace(&ws(), &a).await, &ops, &events)
        .await
        .unwrap();
    assert_eq!((g0, g1), (0, 1));
    let tree = store.tree(&ws(), &a).await.unwrap();
    let files = tree.iter().filter(|e| e.kind == EntryKind::File).count();
    let dirs = tree.iter().filter(|e| e.kind == EntryKind::Dir).count();
    assert_eq!((files, dirs), (3000, 14));
    let after = store.recent_events(&ws(), 10_000).await.unwrap().len();
    assert_eq!(after - before, 3000);

    // The same on a deleted namespace: refused, and nothing of it stays.
    store
        .delete_namespace(&ws(), &a, &ev("namespace.deleted", Some("alice")), &|_| {
            ev("key.revoked", None)
        })
        .await
        .unwrap()
        .unwrap();
    let events_now = store.recent_events(&ws(), 10_000).await.unwrap().len();
    let more: Vec<TreeOp> = (0..3000)
        .map(|i| TreeOp::File(file(&format!("late/file-{i:05}"), 1)))
        .collect();
    let events: Vec<NewEvent> = (0..3000)
        .map(|_| ev("file.written", Some("alice")))
        .collect();
    let r = store
        .commit_tree_ops(&lock_namespace(&ws(), &a).await, &more, &events)
        .await;
    assert!(matches!(r, Err(Error::NamespaceDeleted(_))), "{r:?}");
    assert!(
        store
            .get_entry(&ws(), &a, &p("late"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.recent_events(&ws(), 10_000).await.unwrap().len(),
        events_now
    );
}

/// A write whose caller goes away mid-transaction (a dropped request) happens whole or not at
/// all (whether it does depends on whether its commit was already sent), and the connection it
/// used keeps working for every kind of write.
async fn abandoned_writes_are_whole_or_absent(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let a = ns("alice");
    let mut abandoned = 0;
    for i in 0..40 {
        let f = file(&format!("dropped-{i}"), 1);
        let e = ev("file.written", Some("alice"));
        // Polled once, then dropped. (The database thread is sometimes quick enough for one
        // poll to finish it.)
        match futures::FutureExt::now_or_never(store.commit_write(
            &lock_write(&ws(), &a, &f).await,
            &f,
            &e,
        )) {
            Some(r) => r.unwrap(),
            None => abandoned += 1,
        }
        commit_file(
            &*store,
            &a,
            &file("kept", 1),
            &ev("file.written", Some("alice")),
        )
        .await
        .unwrap();
        store
            .commit_delete(
                &lock_delete(&ws(), &a, &p("kept")).await,
                &ev("file.deleted", Some("alice")),
            )
            .await
            .unwrap()
            .unwrap();
    }
    assert!(abandoned > 0, "no write was abandoned: nothing was tested");
    // An abandoned write may still be committing on a task of its own: read until two looks
    // agree.
    let mut last = None;
    let (present, written, deleted, generation) = loop {
        let present = store.tree(&ws(), &a).await.unwrap().len() as u64;
        let events = store.recent_events(&ws(), 1000).await.unwrap();
        let count = |name: &str| events.iter().filter(|e| e.kind == name).count() as u64;
        let generation = store.generation(&ws(), &a).await.unwrap();
        let look = (
            present,
            count("file.written"),
            count("file.deleted"),
            generation,
        );
        if last == Some(look) {
            break look;
        }
        last = Some(look);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Every write that left a row left its event and its generation step, and nothing else did.
    assert_eq!(written, 40 + present);
    assert_eq!(deleted, 40);
    assert_eq!(generation, 80 + present);
}

/// Concurrent writes are committed together; a bad one among them fails alone and takes
/// nothing else with it.
async fn concurrent_writes_fail_alone(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let a = ns("alice");
    for path in ["f", "d/inner"] {
        commit_file(
            &*store,
            &a,
            &file(path, 1),
            &ev("file.written", Some("alice")),
        )
        .await
        .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..60 {
        // Every sixth write is refused: under a file, or onto a directory.
        let path = match i % 6 {
            0 => format!("f/under-{i}"),
            3 => "d".to_owned(),
            _ => format!("ok/{}/file-{i}", i % 4),
        };
        let store = Arc::clone(&store);
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let r = commit_file(
                &*store,
                &a,
                &file(&path, 1),
                &ev("file.written", Some("alice")),
            )
            .await;
            (path, r)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (path, r) = t.await.unwrap();
        if path.starts_with("ok/") {
            r.unwrap();
            ok += 1;
            assert!(
                store
                    .get_entry(&ws(), &a, &p(&path))
                    .await
                    .unwrap()
                    .is_some()
            );
        } else {
            assert!(matches!(r, Err(Error::Conflict(_))), "{path}: {r:?}");
        }
    }
    assert_eq!(ok, 40);
    let files = store.tree(&ws(), &a).await.unwrap();
    let files = files.iter().filter(|e| e.kind == EntryKind::File).count();
    assert_eq!(files, 2 + 40);
    assert_eq!(store.generation(&ws(), &a).await.unwrap(), 2 + 40);
    let events = store.recent_events(&ws(), 1000).await.unwrap();
    assert_eq!(events.len(), 2 + 40);
}

// --- helpers for the cases below ---

/// Mints a key (locked to `namespace` when given) with hash `[n; 32]`.
async fn key(store: &dyn MetaStore, n: u8, namespace: Option<&str>) -> KeyRecord {
    let record = KeyRecord {
        id: KeyId::from_string(format!("key-{n}")),
        workspace: ws(),
        name: format!("k{n}"),
        prefix: "trove-sk-abc".into(),
        scope: Scope::Workspace,
        namespace: namespace.map(ns),
        created_at: Micros::now(),
        last_used_at: None,
        bootstrap: false,
    };
    let new = NewKey {
        record: record.clone(),
        hash: [n; 32],
    };
    store
        .insert_key(&new, &ev("key.created", None))
        .await
        .unwrap();
    record
}

/// Writes `path` in `namespace`, recording an event of `kind`; returns the event's id.
async fn write(store: &dyn MetaStore, namespace: &str, path: &str, kind: &'static str) -> EventId {
    let e = ev(kind, Some(namespace));
    let id = e.id.clone();
    commit_file(store, &ns(namespace), &file(path, 1), &e)
        .await
        .unwrap();
    id
}

fn query(limit: u32) -> EventQuery {
    EventQuery::newest(ws(), limit)
}

fn ids(events: &[EventRecord]) -> Vec<String> {
    events.iter().map(|e| e.id.as_str().to_owned()).collect()
}

fn hook(id: &str, events: &[&str], namespace: Option<&str>) -> Webhook {
    Webhook {
        id: id.into(),
        workspace: ws(),
        url: "https://hooks.example/x".into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        namespace: namespace.map(ns),
        description: None,
        secret: "trove-whsec-00".into(),
        enabled: true,
        created_at: Micros::now(),
        last_delivery_at: None,
        last_delivery_ok: None,
        last_delivery_status: None,
    }
}

fn attempt(ok: bool, retry_after: Option<Duration>) -> AttemptResult {
    AttemptResult {
        ok,
        status: Some(if ok { 200 } else { 500 }),
        error: None,
        at: Micros::now(),
        retry_after,
    }
}

fn snapshot(id: u8, namespace: &str, created: i64, expires: i64) -> SnapshotRecord {
    SnapshotRecord {
        id: SnapshotId::from_random([id; 8]),
        workspace: ws(),
        namespace: ns(namespace),
        label: Some(format!("s{id}")),
        size_bytes: 100 + id as u64,
        file_count: id as u64,
        key_id: Some("key-1".into()),
        created_at: Micros(created),
        expires_at: Micros(expires),
    }
}

fn audit(key: &str, namespace: &str, operation: &str, at: i64) -> AuditRecord {
    AuditRecord {
        seq: AuditPos::START,
        workspace: ws(),
        key_id: key.into(),
        namespace: Some(namespace.into()),
        operation: operation.into(),
        path: Some("a.txt".into()),
        status: 200,
        created_at: Micros(at),
    }
}

// --- settings, trees ---

async fn the_default_workspace_is_a_setting(store: Arc<dyn MetaStore>) {
    assert_eq!(store.get_setting("default_workspace").await.unwrap(), None);
    setup(&*store).await;
    assert_eq!(
        store.get_setting("default_workspace").await.unwrap(),
        Some(ws().to_string())
    );
    assert_eq!(store.get_setting("no such setting").await.unwrap(), None);
}

async fn replace_tree_swaps_the_whole_tree(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let a = ns("a");
    write(&*store, "a", "old.txt", "file.written").await;
    write(&*store, "a", "d/old.txt", "file.written").await;
    let before = store.generation(&ws(), &a).await.unwrap();
    let e = ev("namespace.reindexed", Some("a"));
    store
        .replace_tree(
            &lock_namespace(&ws(), &a).await,
            &[file("x/y/z.txt", 5), file("top.txt", 2)],
            &e,
        )
        .await
        .unwrap();
    let paths: Vec<String> = store
        .tree(&ws(), &a)
        .await
        .unwrap()
        .iter()
        .map(|e| e.path.as_str().to_owned())
        .collect();
    assert_eq!(paths, ["top.txt", "x", "x/y", "x/y/z.txt"]);
    let mut files = store.file_paths(&ws(), &a).await.unwrap();
    files.sort();
    assert_eq!(files, [p("top.txt"), p("x/y/z.txt")]);
    assert!(store.generation(&ws(), &a).await.unwrap() > before);
    assert_eq!(store.recent_events(&ws(), 1).await.unwrap()[0].id, e.id);
    // An empty replacement empties the namespace.
    store
        .replace_tree(
            &lock_namespace(&ws(), &a).await,
            &[],
            &ev("namespace.reindexed", Some("a")),
        )
        .await
        .unwrap();
    assert!(store.file_paths(&ws(), &a).await.unwrap().is_empty());
}

// --- snapshots and the namespace lifecycle ---

async fn the_snapshot_catalogue(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    write(&*store, "a", "f.txt", "file.written").await;
    for (id, created, expires) in [(1, 10, 300), (2, 20, 100), (3, 30, 200)] {
        store
            .insert_snapshot(
                &snapshot(id, "a", created, expires),
                &ev("snapshot.created", Some("a")),
            )
            .await
            .unwrap();
    }
    let listed = store.list_snapshots(&ws(), &ns("a"), 10).await.unwrap();
    let labels: Vec<_> = listed.iter().map(|s| s.label.clone().unwrap()).collect();
    assert_eq!(labels, ["s3", "s2", "s1"], "newest first");
    assert_eq!(
        store
            .list_snapshots(&ws(), &ns("a"), 2)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        store
            .list_snapshots(&ws(), &ns("b"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let two = snapshot(2, "a", 20, 100);
    assert_eq!(
        store.get_snapshot(&ws(), &ns("a"), &two.id).await.unwrap(),
        Some(two.clone())
    );
    assert_eq!(
        store.get_snapshot(&ws(), &ns("b"), &two.id).await.unwrap(),
        None
    );

    // Expired at or before `now`, soonest expiry first, bounded.
    let expired = store.expired_snapshots(Micros(200), 10).await.unwrap();
    let labels: Vec<_> = expired.iter().map(|s| s.label.clone().unwrap()).collect();
    assert_eq!(labels, ["s2", "s3"]);
    assert_eq!(
        store.expired_snapshots(Micros(200), 1).await.unwrap().len(),
        1
    );

    let del = ev("snapshot.deleted", Some("a"));
    assert!(
        store
            .delete_snapshot(&ws(), &ns("a"), &two.id, &del)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_snapshot(&ws(), &ns("a"), &two.id, &del)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_snapshot(&ws(), &ns("a"), &two.id).await.unwrap(),
        None
    );

    let usage = store.list_namespaces(&ws()).await.unwrap();
    let a = usage.iter().find(|u| u.name == "a").unwrap();
    assert_eq!((a.snapshots, a.snapshot_bytes), (2, 101 + 103));
    assert_eq!((a.files, a.bytes, a.state.as_str()), (1, 1, "active"));
}

async fn namespace_lifecycle_from_delete_to_purge(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    write(&*store, "gone", "f.txt", "file.written").await;
    write(&*store, "kept", "f.txt", "file.written").await;
    let locked = key(&*store, 1, Some("gone")).await;
    key(&*store, 2, Some("kept")).await;
    key(&*store, 3, None).await;
    store
        .insert_snapshot(
            &snapshot(1, "gone", 10, i64::MAX),
            &ev("snapshot.created", Some("gone")),
        )
        .await
        .unwrap();
    store
        .insert_webhook(
            &hook("wh-gone", &["*"], Some("gone")),
            &ev("webhook.created", None),
        )
        .await
        .unwrap();
    store
        .insert_webhook(&hook("wh-all", &["*"], None), &ev("webhook.created", None))
        .await
        .unwrap();
    store
        .append_audit(&[
            audit("key-1", "gone", "write", 5),
            audit("key-2", "kept", "write", 5),
        ])
        .await
        .unwrap();

    let (gone, kept) = (ns("gone"), ns("kept"));
    let revoked_event = |id: &KeyId| NewEvent {
        data: format!(r#"{{"key_id":"{id}"}}"#),
        ..ev("key.revoked", None)
    };
    let hashes = store
        .delete_namespace(
            &ws(),
            &gone,
            &ev("namespace.deleted", Some("gone")),
            &revoked_event,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        hashes,
        vec![(locked.id.clone(), [1u8; 32])],
        "only the key locked to it is revoked"
    );
    assert!(store.key_by_hash(&[1; 32]).await.unwrap().is_none());
    assert!(store.key_by_hash(&[2; 32]).await.unwrap().is_some());
    let newest = store.recent_events(&ws(), 2).await.unwrap();
    let kinds: Vec<_> = newest.iter().map(|e| e.kind.as_str()).collect();
    assert!(
        kinds.contains(&"namespace.deleted") && kinds.contains(&"key.revoked"),
        "{kinds:?}"
    );
    assert!(newest.iter().any(|e| e.data.contains(locked.id.as_str())));
    // Nothing may change in it while it is deleted; a second delete finds nothing.
    let r = commit_file(
        &*store,
        &gone,
        &file("new.txt", 1),
        &ev("file.written", Some("gone")),
    )
    .await;
    assert!(matches!(r, Err(Error::NamespaceDeleted(_))), "{r:?}");
    let r = store
        .insert_snapshot(
            &snapshot(9, "gone", 1, 2),
            &ev("snapshot.created", Some("gone")),
        )
        .await;
    assert!(matches!(r, Err(Error::NamespaceDeleted(_))), "{r:?}");
    let again = store
        .delete_namespace(
            &ws(),
            &gone,
            &ev("namespace.deleted", Some("gone")),
            &revoked_event,
        )
        .await
        .unwrap();
    assert!(again.is_none());
    let state = |usage: &[warren::db::NamespaceUsage], name: &str| {
        usage
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.state.clone())
    };
    let usage = store.list_namespaces(&ws()).await.unwrap();
    assert_eq!(state(&usage, "gone").as_deref(), Some("deleted"));
    let deleted = store.deleted_namespaces().await.unwrap();
    assert_eq!(
        deleted.iter().map(|d| (&d.0, &d.1)).collect::<Vec<_>>(),
        [(&ws(), &gone)]
    );

    // Restore brings it back (its revoked keys stay revoked); restoring twice finds nothing.
    let restored = ev("namespace.restored", Some("gone"));
    assert!(
        store
            .restore_namespace(&ws(), &gone, &restored)
            .await
            .unwrap()
    );
    assert!(
        !store
            .restore_namespace(&ws(), &gone, &restored)
            .await
            .unwrap()
    );
    assert!(store.key_by_hash(&[1; 32]).await.unwrap().is_none());
    assert!(store.deleted_namespaces().await.unwrap().is_empty());
    write(&*store, "gone", "after.txt", "file.written").await;

    // Delete again, then purge: past begin_purge there is no way back.
    store
        .delete_namespace(
            &ws(),
            &gone,
            &ev("namespace.deleted", Some("gone")),
            &revoked_event,
        )
        .await
        .unwrap()
        .unwrap();
    let proof = ev("namespace.purged", Some("gone"));
    assert!(
        !store.purge_namespace(&ws(), &gone, &proof).await.unwrap(),
        "not purging yet"
    );
    let counted = |objects| PurgeInventory {
        objects,
        bytes: objects * 10,
        snapshot_objects: 1,
    };
    assert_eq!(
        store.begin_purge(&ws(), &kept, counted(3)).await.unwrap(),
        None,
        "kept is not deleted"
    );
    assert_eq!(
        store.begin_purge(&ws(), &gone, counted(3)).await.unwrap(),
        Some(counted(3))
    );
    // Begun again (after a crash, or by the next leader) with less left to find: the purge
    // still reports what there was when it first began.
    assert_eq!(
        store.begin_purge(&ws(), &gone, counted(1)).await.unwrap(),
        Some(counted(3)),
        "still purging, with its first count"
    );
    assert!(
        !store
            .restore_namespace(&ws(), &gone, &restored)
            .await
            .unwrap()
    );
    assert_eq!(store.deleted_namespaces().await.unwrap().len(), 1);
    assert!(store.purge_namespace(&ws(), &gone, &proof).await.unwrap());
    assert!(!store.purge_namespace(&ws(), &gone, &proof).await.unwrap());

    // Only the proof remains of it; the other namespace lost nothing.
    assert!(store.tree(&ws(), &gone).await.unwrap().is_empty());
    assert!(
        store
            .list_snapshots(&ws(), &gone, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let left = store
        .query_events(&EventQuery {
            namespace: Some(gone.clone()),
            ..query(100)
        })
        .await
        .unwrap();
    assert_eq!(ids(&left), [proof.id.as_str()]);
    let audit_q = |namespace: &str| AuditQuery {
        workspace: ws(),
        key_id: None,
        namespace: Some(namespace.into()),
        operation: None,
        from: None,
        to: None,
        cursor: None,
        oldest_first: false,
        limit: 100,
    };
    assert!(
        store
            .query_audit(&audit_q("gone"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.query_audit(&audit_q("kept")).await.unwrap().len(), 1);
    let hooks: Vec<_> = store
        .list_webhooks(&ws())
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(hooks, ["wh-all"]);
    assert!(store.deleted_namespaces().await.unwrap().is_empty());
    assert_eq!(store.tree(&ws(), &kept).await.unwrap().len(), 1);
    // The name is free for a new tenant, who starts from nothing.
    write(&*store, "gone", "fresh.txt", "file.written").await;
    assert_eq!(
        store.file_paths(&ws(), &gone).await.unwrap(),
        [p("fresh.txt")]
    );
}

// --- the event log ---

async fn event_queries_filter_and_page(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let mut all = Vec::new();
    for i in 0..6 {
        let (n, kind) = if i % 2 == 0 {
            ("a", "file.written")
        } else {
            ("b", "exec.completed")
        };
        all.push(write(&*store, n, &format!("f{i}"), kind).await);
    }
    let newest_first: Vec<String> = all.iter().rev().map(|i| i.as_str().to_owned()).collect();
    assert_eq!(
        ids(&store.recent_events(&ws(), 100).await.unwrap()),
        newest_first
    );
    assert_eq!(
        ids(&store.recent_events(&ws(), 2).await.unwrap()),
        newest_first[..2]
    );

    let only_a = store
        .query_events(&EventQuery {
            namespace: Some(ns("a")),
            ..query(100)
        })
        .await
        .unwrap();
    assert_eq!(only_a.len(), 3);
    assert!(only_a.iter().all(|e| e.namespace.as_deref() == Some("a")));
    let typed = store
        .query_events(&EventQuery {
            types: vec!["exec.completed".into()],
            ..query(100)
        })
        .await
        .unwrap();
    assert!(typed.len() == 3 && typed.iter().all(|e| e.kind == "exec.completed"));
    let hidden = store
        .query_events(&EventQuery {
            hidden_types: &["exec.completed"],
            ..query(100)
        })
        .await
        .unwrap();
    assert!(hidden.len() == 3 && hidden.iter().all(|e| e.kind == "file.written"));

    // Times strictly increase in log order; `since` is strictly after.
    let log = store.recent_events(&ws(), 100).await.unwrap();
    assert!(
        log.windows(2)
            .all(|w| w[0].created_at > w[1].created_at && w[0].seq > w[1].seq)
    );
    let since = store
        .query_events(&EventQuery {
            since: Some(log[2].created_at),
            ..query(100)
        })
        .await
        .unwrap();
    assert_eq!(ids(&since), newest_first[..2]);

    // Paging with the cursor: strictly below it, every event once.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .query_events(&EventQuery {
                before_seq: before,
                ..query(4)
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.seq);
        paged.extend(ids(&page));
    }
    assert_eq!(paged, newest_first);

    // The stream's view: oldest first after a position, bounded, optionally one namespace.
    assert_eq!(store.last_event_seq(&ws()).await.unwrap(), log[0].seq);
    let other = WorkspaceId::parse("ws-00000000000000bb").unwrap();
    assert_eq!(store.last_event_seq(&other).await.unwrap(), LogPos::START);
    let after = store
        .events_after(&ws(), None, log[3].seq, 100)
        .await
        .unwrap();
    let oldest_first: Vec<String> = newest_first[..3].iter().rev().cloned().collect();
    assert_eq!(ids(&after), oldest_first);
    assert_eq!(
        store
            .events_after(&ws(), None, log[3].seq, 1)
            .await
            .unwrap()
            .len(),
        1
    );
    let after_b = store
        .events_after(&ws(), Some(&ns("b")), LogPos::START, 100)
        .await
        .unwrap();
    assert!(after_b.len() == 3 && after_b.iter().all(|e| e.namespace.as_deref() == Some("b")));
}

/// The promise pollers rely on: while others append, a reader that polls by position
/// (`events_after`) or by time (`since`) sees every event exactly once, in log order.
async fn pollers_see_every_event_once_while_others_append(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    poll_while_appending(&[store]).await;
}

/// Writers append through every handle in turn; a position poller reads through the first,
/// a time poller through the last. Each must see the whole log once, in log order.
async fn poll_while_appending(handles: &[Arc<dyn MetaStore>]) {
    let store = Arc::clone(&handles[0]);
    const WRITERS: usize = 4;
    const EACH: usize = 40;
    let total = WRITERS * EACH;
    let by_position = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let (mut seen, mut at) = (Vec::new(), LogPos::START);
            while seen.len() < total {
                let batch = store.events_after(&ws(), None, at, 7).await.unwrap();
                if let Some(last) = batch.last() {
                    at = last.seq;
                }
                seen.extend(ids(&batch));
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let by_time = {
        let store = Arc::clone(handles.last().unwrap());
        tokio::spawn(async move {
            let (mut seen, mut since) = (Vec::new(), None);
            while seen.len() < total {
                let mut batch = store
                    .query_events(&EventQuery {
                        since,
                        ..query(1000)
                    })
                    .await
                    .unwrap();
                batch.reverse();
                if let Some(last) = batch.last() {
                    since = Some(last.created_at);
                }
                seen.extend(ids(&batch));
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&handles[w % handles.len()]);
            tokio::spawn(async move {
                for i in 0..EACH {
                    write(&*store, &format!("w{w}"), &format!("f{i}"), "file.written").await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let log: Vec<String> = store
        .recent_events(&ws(), 1000)
        .await
        .unwrap()
        .iter()
        .rev()
        .map(|e| e.id.as_str().to_owned())
        .collect();
    assert_eq!(log.len(), total);
    let (by_position, by_time) = (by_position.await.unwrap(), by_time.await.unwrap());
    assert_eq!(by_position, log, "position poller");
    assert_eq!(by_time, log, "time poller");
}

/// A commit that appends events wakes whoever waits on `appended`, whichever kind of record
/// it changed; the stream waits on that instead of polling.
async fn appending_events_wakes_waiting_pollers(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let mut wake = store.appended();
    for step in ["a file write", "a key mint"] {
        wake.mark_unchanged();
        let waiting = {
            let mut wake = wake.clone();
            tokio::spawn(async move { wake.changed().await })
        };
        if step == "a file write" {
            write(&*store, "a", "f", "file.written").await;
        } else {
            key(&*store, 9, None).await;
        }
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap_or_else(|_| panic!("{step} woke nobody"))
            .unwrap()
            .unwrap();
    }
}

// --- webhooks and their outbox ---

async fn webhooks_are_listed_and_deleted(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let a = hook("wh-a", &["file.written"], Some("a"));
    store
        .insert_webhook(&a, &ev("webhook.created", None))
        .await
        .unwrap();
    store
        .insert_webhook(&hook("wh-b", &["*"], None), &ev("webhook.created", None))
        .await
        .unwrap();
    let listed: Vec<_> = store
        .list_webhooks(&ws())
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(listed, ["wh-a", "wh-b"], "oldest first");
    let got = store.get_webhook(&ws(), "wh-a").await.unwrap().unwrap();
    assert_eq!(
        (got.events, got.namespace, got.secret),
        (a.events, a.namespace, a.secret)
    );
    let other = WorkspaceId::parse("ws-00000000000000bb").unwrap();
    assert!(store.get_webhook(&other, "wh-a").await.unwrap().is_none());

    store
        .record_webhook_result("wh-a", &attempt(false, None))
        .await
        .unwrap();
    let got = store.get_webhook(&ws(), "wh-a").await.unwrap().unwrap();
    assert_eq!(
        (got.last_delivery_ok, got.last_delivery_status),
        (Some(false), Some(500))
    );
    assert!(got.last_delivery_at.is_some());

    let del = ev("webhook.deleted", None);
    assert!(store.delete_webhook(&ws(), "wh-a", &del).await.unwrap());
    assert!(!store.delete_webhook(&ws(), "wh-a", &del).await.unwrap());
    assert!(store.get_webhook(&ws(), "wh-a").await.unwrap().is_none());
    assert_eq!(store.list_webhooks(&ws()).await.unwrap().len(), 1);
}

async fn deliveries_fan_out_by_type_and_namespace(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    for h in [
        hook("wh-written", &["file.written"], None),
        hook("wh-b", &["*"], Some("b")),
        hook("wh-deleted", &["file.deleted", "exec.completed"], None),
    ] {
        store
            .insert_webhook(&h, &ev("webhook.created", None))
            .await
            .unwrap();
    }
    write(&*store, "a", "x", "file.written").await;
    write(&*store, "b", "y", "exec.completed").await;
    let lease = Duration::from_secs(600);
    let mut got: Vec<(String, String)> = Vec::new();
    loop {
        let claimed = store.claim_deliveries(lease, 10, 10).await.unwrap();
        if claimed.is_empty() {
            break;
        }
        for d in claimed {
            got.push((d.webhook.id.clone(), d.event.kind.clone()));
            assert!(
                store
                    .finish_delivery(d.id, &d.lease, &attempt(true, None))
                    .await
                    .unwrap()
            );
        }
    }
    got.sort();
    let want = [
        ("wh-b", "exec.completed"),
        ("wh-deleted", "exec.completed"),
        ("wh-written", "file.written"),
    ];
    assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
    let health = store.get_webhook(&ws(), "wh-b").await.unwrap().unwrap();
    assert_eq!(
        (health.last_delivery_ok, health.last_delivery_status),
        (Some(true), Some(200))
    );
}

/// Leases are exclusive per subscription, run out, and fence: an attempt whose lease was
/// claimed again cannot record its outcome.
async fn delivery_leases_fence_stale_workers(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    store
        .insert_webhook(
            &hook("wh", &["file.written"], None),
            &ev("webhook.created", None),
        )
        .await
        .unwrap();
    write(&*store, "a", "one", "file.written").await;
    write(&*store, "a", "two", "file.written").await;
    assert_eq!(store.pending_deliveries().await.unwrap(), 2, "the backlog");

    // One delivery per subscription in flight; none while it is leased.
    let first = store
        .claim_deliveries(Duration::from_secs(600), 10, 5)
        .await
        .unwrap();
    assert_eq!(first.len(), 2, "two due, both within per_webhook");
    for d in &first {
        assert!(
            store
                .finish_delivery(d.id, &d.lease, &attempt(true, None))
                .await
                .unwrap()
        );
    }
    assert_eq!(
        store.pending_deliveries().await.unwrap(),
        0,
        "delivered ones leave it"
    );
    write(&*store, "a", "three", "file.written").await;
    write(&*store, "a", "four", "file.written").await;
    let held = store
        .claim_deliveries(Duration::from_secs(600), 10, 1)
        .await
        .unwrap();
    assert_eq!(held.len(), 1, "per_webhook bounds a claim");
    assert!(
        store
            .claim_deliveries(Duration::from_secs(600), 10, 1)
            .await
            .unwrap()
            .is_empty(),
        "the subscription is busy"
    );
    assert!(
        store
            .finish_delivery(held[0].id, &held[0].lease, &attempt(true, None))
            .await
            .unwrap()
    );

    // A lease that runs out makes the delivery due again, under a new token.
    let stale = store
        .claim_deliveries(Duration::from_millis(1), 10, 1)
        .await
        .unwrap();
    assert_eq!(stale.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fresh = store
        .claim_deliveries(Duration::from_secs(600), 10, 1)
        .await
        .unwrap();
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].id, stale[0].id);
    assert_ne!(fresh[0].lease, stale[0].lease);
    assert!(
        !store
            .finish_delivery(stale[0].id, &stale[0].lease, &attempt(false, None))
            .await
            .unwrap(),
        "a stale lease cannot finish it"
    );
    assert!(
        !store
            .finish_delivery(fresh[0].id, &LeaseToken::random(), &attempt(true, None))
            .await
            .unwrap()
    );

    // A failure with a retry is pending again after the delay, counting the attempt.
    assert!(
        store
            .finish_delivery(
                fresh[0].id,
                &fresh[0].lease,
                &attempt(false, Some(Duration::from_secs(3600)))
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_deliveries(Duration::from_secs(600), 10, 5)
            .await
            .unwrap()
            .is_empty(),
        "not due for an hour"
    );
    assert!(
        !store
            .finish_delivery(fresh[0].id, &fresh[0].lease, &attempt(true, None))
            .await
            .unwrap(),
        "a finished lease is spent"
    );
    write(&*store, "a", "five", "file.written").await;
    let next = store
        .claim_deliveries(Duration::from_secs(600), 10, 5)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert!(
        store
            .finish_delivery(
                next[0].id,
                &next[0].lease,
                &attempt(false, Some(Duration::ZERO))
            )
            .await
            .unwrap()
    );
    let retried = store
        .claim_deliveries(Duration::from_secs(600), 10, 5)
        .await
        .unwrap();
    assert_eq!(
        (retried.len(), retried[0].id, retried[0].attempts),
        (1, next[0].id, 1)
    );
    // Failed for good: never claimed again.
    assert!(
        store
            .finish_delivery(retried[0].id, &retried[0].lease, &attempt(false, None))
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_deliveries(Duration::from_secs(600), 10, 5)
            .await
            .unwrap()
            .is_empty()
    );

    // Deleting the subscription cancels what it had pending, leased or not.
    write(&*store, "a", "six", "file.written").await;
    let doomed = store
        .claim_deliveries(Duration::from_secs(600), 10, 5)
        .await
        .unwrap();
    assert_eq!(doomed.len(), 1);
    assert!(
        store
            .delete_webhook(&ws(), "wh", &ev("webhook.deleted", None))
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_delivery(doomed[0].id, &doomed[0].lease, &attempt(true, None))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        store
            .claim_deliveries(Duration::from_secs(600), 10, 5)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Concurrent workers never hold the same delivery at once, and every delivery is finished
/// exactly once.
async fn concurrent_claimers_share_the_outbox(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    claim_concurrently(&[store]).await;
}

/// Three workers, spread over the handles, drain an outbox of 40 deliveries: each is claimed
/// and finished exactly once.
async fn claim_concurrently(handles: &[Arc<dyn MetaStore>]) {
    let store = Arc::clone(&handles[0]);
    for h in 0..4 {
        store
            .insert_webhook(
                &hook(&format!("wh-{h}"), &["file.written"], None),
                &ev("webhook.created", None),
            )
            .await
            .unwrap();
    }
    for i in 0..10 {
        write(&*store, "a", &format!("f{i}"), "file.written").await;
    }
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let store = Arc::clone(&handles[i % handles.len()]);
            tokio::spawn(async move {
                let mut done = Vec::new();
                for _ in 0..200 {
                    let batch = store
                        .claim_deliveries(Duration::from_secs(600), 3, 2)
                        .await
                        .unwrap();
                    for d in batch {
                        assert!(
                            store
                                .finish_delivery(d.id, &d.lease, &attempt(true, None))
                                .await
                                .unwrap()
                        );
                        done.push(d.id);
                    }
                    tokio::task::yield_now().await;
                }
                done
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (n, all.len()),
        (40, 40),
        "each of 4 × 10 deliveries finished once"
    );
}

// --- audit and retention ---

async fn audit_trail_filters_and_pages(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let records: Vec<AuditRecord> = (0..10)
        .map(|i| {
            audit(
                if i % 2 == 0 { "key-a" } else { "key-b" },
                if i < 5 { "x" } else { "y" },
                if i % 3 == 0 { "exec" } else { "write" },
                100 + i,
            )
        })
        .collect();
    store.append_audit(&records[..4]).await.unwrap();
    store.append_audit(&records[4..]).await.unwrap();
    let q = AuditQuery {
        workspace: ws(),
        key_id: None,
        namespace: None,
        operation: None,
        from: None,
        to: None,
        cursor: None,
        oldest_first: false,
        limit: 100,
    };
    let times = |rs: &[AuditRecord]| rs.iter().map(|r| r.created_at.0).collect::<Vec<_>>();
    let all = store.query_audit(&q).await.unwrap();
    assert_eq!(times(&all), (100..110).rev().collect::<Vec<_>>());
    assert!(all.iter().all(|r| r.seq > AuditPos::START));
    let by_key = store
        .query_audit(&AuditQuery {
            key_id: Some("key-a".into()),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(times(&by_key), [108, 106, 104, 102, 100]);
    let by_ns_op = store
        .query_audit(&AuditQuery {
            namespace: Some("y".into()),
            operation: Some("exec".into()),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(times(&by_ns_op), [109, 106]);
    let window = store
        .query_audit(&AuditQuery {
            from: Some(Micros(103)),
            to: Some(Micros(106)),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        times(&window),
        [105, 104, 103],
        "from inclusive, to exclusive"
    );
    for oldest_first in [false, true] {
        let mut pages = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .query_audit(&AuditQuery {
                    cursor,
                    oldest_first,
                    limit: 3,
                    ..q.clone()
                })
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            cursor = Some(last.seq);
            pages.extend(times(&page));
        }
        let mut want: Vec<i64> = (100..110).collect();
        if !oldest_first {
            want.reverse();
        }
        assert_eq!(pages, want, "oldest_first = {oldest_first}");
    }
}

async fn retention_sweeps_in_bounded_batches(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    store
        .insert_webhook(
            &hook("wh", &["exec.completed"], None),
            &ev("webhook.created", None),
        )
        .await
        .unwrap();
    for i in 0..5 {
        write(&*store, "a", &format!("f{i}"), "file.written").await;
    }
    // One event with a delivery still pending: it stays until the delivery is done.
    write(&*store, "a", "pending", "exec.completed").await;
    let old_audit: Vec<AuditRecord> = (0..3)
        .map(|i| audit("key-a", "a", "write", 10 + i))
        .collect();
    store.append_audit(&old_audit).await.unwrap();
    store
        .append_audit(&[audit("key-a", "a", "write", i64::MAX / 2)])
        .await
        .unwrap();

    let cutoff = Micros(Micros::now().0 + 1_000_000);
    // webhook.created plus six writes' events; the pending one is not counted.
    let counted = store.count_log(cutoff).await.unwrap();
    assert_eq!(
        counted,
        Swept {
            events: 6,
            deliveries: 0,
            audit: 3
        }
    );
    let first = store.sweep_log(cutoff, 2).await.unwrap();
    assert_eq!((first.events, first.audit), (2, 2), "a batch is bounded");
    let mut total = first;
    loop {
        let s = store.sweep_log(cutoff, 2).await.unwrap();
        if s == Swept::default() {
            break;
        }
        total.events += s.events;
        total.audit += s.audit;
        total.deliveries += s.deliveries;
    }
    assert_eq!(
        total, counted,
        "the dry run counted what the sweeps removed"
    );
    let left = store.recent_events(&ws(), 100).await.unwrap();
    assert_eq!(
        left.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["exec.completed"]
    );
    assert_eq!(store.count_log(cutoff).await.unwrap(), Swept::default());

    // Once delivered, the event and its delivery go too.
    let d = store
        .claim_deliveries(Duration::from_secs(60), 10, 10)
        .await
        .unwrap();
    assert!(
        store
            .finish_delivery(d[0].id, &d[0].lease, &attempt(true, None))
            .await
            .unwrap()
    );
    let s = store.sweep_log(cutoff, 10).await.unwrap();
    assert_eq!((s.events, s.deliveries, s.audit), (1, 1, 0));
    assert!(store.recent_events(&ws(), 100).await.unwrap().is_empty());
}

async fn close_lets_pending_writes_finish(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    write(&*store, "a", "f", "file.written").await;
    store.close().await;
}

// --- two handles on one database (two nodes) ---

async fn two_handles_poll_every_event_once(a: Arc<dyn MetaStore>, b: Arc<dyn MetaStore>) {
    setup(&*a).await;
    poll_while_appending(&[a, b]).await;
}

async fn two_handles_never_share_a_claim(a: Arc<dyn MetaStore>, b: Arc<dyn MetaStore>) {
    setup(&*a).await;
    claim_concurrently(&[a, b]).await;
}

/// A worker on one node whose lease ran out cannot record over the worker on another node
/// that claimed the delivery since.
async fn a_stale_lease_cannot_finish_on_any_handle(a: Arc<dyn MetaStore>, b: Arc<dyn MetaStore>) {
    setup(&*a).await;
    a.insert_webhook(
        &hook("wh", &["file.written"], None),
        &ev("webhook.created", None),
    )
    .await
    .unwrap();
    write(&*a, "x", "f", "file.written").await;
    let stale = a
        .claim_deliveries(Duration::from_millis(1), 10, 1)
        .await
        .unwrap();
    assert_eq!(stale.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fresh = b
        .claim_deliveries(Duration::from_secs(600), 10, 1)
        .await
        .unwrap();
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].id, stale[0].id);
    for handle in [&a, &b] {
        assert!(
            !handle
                .finish_delivery(stale[0].id, &stale[0].lease, &attempt(false, None))
                .await
                .unwrap(),
            "a stale lease cannot finish it"
        );
    }
    assert!(
        a.claim_deliveries(Duration::from_secs(600), 10, 1)
            .await
            .unwrap()
            .is_empty(),
        "leased by the other handle"
    );
    assert!(
        b.finish_delivery(fresh[0].id, &fresh[0].lease, &attempt(true, None))
            .await
            .unwrap()
    );
}

/// A store, and whatever must live as long as it (a temporary directory).
type Fixture = (Arc<dyn MetaStore>, Option<tempfile::TempDir>);

async fn sqlite_memory() -> Fixture {
    (warren::db::open("sqlite::memory:").await.unwrap(), None)
}

async fn sqlite_file() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    (warren::db::open(&url).await.unwrap(), Some(dir))
}

#[cfg(feature = "pg-tests")]
async fn postgres() -> Fixture {
    (
        warren::db::open(&pg::fresh_database().await).await.unwrap(),
        None,
    )
}

/// A pending browser login with codes hashed from `tag`, expiring `ttl` after `now`.
fn login(tag: u8, now: Micros, ttl: i64) -> NewDeviceLogin {
    NewDeviceLogin {
        device_hash: [tag; 32],
        user_hash: [tag ^ 0xff; 32],
        created_at: now,
        expires_at: Micros(now.0 + ttl),
    }
}

fn approval(ns: Option<&str>) -> DeviceDecision {
    DeviceDecision::Approve(ApprovedLogin {
        workspace: ws().as_str().to_owned(),
        namespace: ns.map(str::to_owned),
        key_name: "laptop".into(),
        approved_by: "key-approver".into(),
    })
}

/// A browser login goes pending → approved → taken once → expired; a denied one stays denied
/// until it expires; codes are unique; only pending, unexpired logins can be decided; the
/// sweep removes what expired.
async fn device_logins_are_decided_once_and_taken_once(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let now = Micros::now();
    let minute = 60_000_000;
    let a = login(1, now, minute);
    assert!(store.insert_device_login(&a).await.unwrap());
    assert!(
        !store.insert_device_login(&a).await.unwrap(),
        "a taken code"
    );
    let mut same_user_code = login(2, now, minute);
    same_user_code.user_hash = a.user_hash;
    assert!(!store.insert_device_login(&same_user_code).await.unwrap());
    assert_eq!(store.count_pending_device_logins(now).await.unwrap(), 1);

    assert_eq!(
        store.poll_device_login(&a.device_hash, now).await.unwrap(),
        DevicePoll::Pending
    );
    assert_eq!(
        store.pending_device_login(&a.user_hash, now).await.unwrap(),
        Some(a.expires_at)
    );
    assert!(
        store
            .decide_device_login(&a.user_hash, &approval(Some("ns1")), now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .decide_device_login(&a.user_hash, &DeviceDecision::Deny, now)
            .await
            .unwrap(),
        "decided already"
    );
    assert_eq!(
        store.pending_device_login(&a.user_hash, now).await.unwrap(),
        None
    );
    let DevicePoll::Approved(got) = store.poll_device_login(&a.device_hash, now).await.unwrap()
    else {
        panic!("not approved");
    };
    assert_eq!(got.namespace.as_deref(), Some("ns1"));
    assert_eq!(
        (got.key_name.as_str(), got.approved_by.as_str()),
        ("laptop", "key-approver")
    );
    assert_eq!(
        store.poll_device_login(&a.device_hash, now).await.unwrap(),
        DevicePoll::Expired,
        "taken once"
    );

    let b = login(3, now, minute);
    store.insert_device_login(&b).await.unwrap();
    assert!(
        store
            .decide_device_login(&b.user_hash, &DeviceDecision::Deny, now)
            .await
            .unwrap()
    );
    for _ in 0..2 {
        assert_eq!(
            store.poll_device_login(&b.device_hash, now).await.unwrap(),
            DevicePoll::Denied
        );
    }

    // Past its expiry a login is gone for every purpose, before any sweep.
    let c = login(4, now, 1_000);
    store.insert_device_login(&c).await.unwrap();
    let later = Micros(now.0 + 2_000);
    assert_eq!(store.count_pending_device_logins(later).await.unwrap(), 0);
    assert!(
        !store
            .decide_device_login(&c.user_hash, &approval(None), later)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .poll_device_login(&c.device_hash, later)
            .await
            .unwrap(),
        DevicePoll::Expired
    );
    assert_eq!(
        store.poll_device_login(&[9; 32], now).await.unwrap(),
        DevicePoll::Expired,
        "unknown"
    );
    assert_eq!(store.sweep_device_logins(later).await.unwrap(), 1);
    assert_eq!(
        store
            .sweep_device_logins(Micros(now.0 + 2 * minute))
            .await
            .unwrap(),
        2
    );
}

/// Two nodes polling one approved login at once: exactly one of them takes it.
async fn two_handles_take_an_approved_login_once(a: Arc<dyn MetaStore>, b: Arc<dyn MetaStore>) {
    setup(&*a).await;
    let now = Micros::now();
    for tag in 0..20u8 {
        let l = login(tag, now, 60_000_000);
        a.insert_device_login(&l).await.unwrap();
        assert!(
            b.decide_device_login(&l.user_hash, &approval(None), now)
                .await
                .unwrap()
        );
        let (x, y) = tokio::join!(
            a.poll_device_login(&l.device_hash, now),
            b.poll_device_login(&l.device_hash, now)
        );
        let taken = [x.unwrap(), y.unwrap()]
            .iter()
            .filter(|p| matches!(p, DevicePoll::Approved(_)))
            .count();
        assert_eq!(taken, 1, "login {tag}");
    }
}

macro_rules! stores {
    ($($store:ident),*) => {
        $(mod $store {
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test]
                    async fn $name() {
                        let (store, _dir) = super::$store().await;
                        super::$name(store).await
                    }
                };
            }
            case!(default_workspace_is_created_once);
            case!(keys_lifecycle);
            case!(writes_create_parents_and_bump_generation);
            case!(the_journal_tells_what_changed_since_a_generation);
            case!(conflicts_are_refused_without_side_effects);
            case!(children_are_ordered_dirs_first_then_bytewise);
            case!(delete_removes_exactly_the_subtree);
            case!(namespaces_do_not_see_each_other);
            case!(large_tree_commits_are_whole);
            case!(abandoned_writes_are_whole_or_absent);
            case!(concurrent_writes_fail_alone);
            case!(the_default_workspace_is_a_setting);
            case!(replace_tree_swaps_the_whole_tree);
            case!(the_snapshot_catalogue);
            case!(namespace_lifecycle_from_delete_to_purge);
            case!(event_queries_filter_and_page);
            case!(pollers_see_every_event_once_while_others_append);
            case!(appending_events_wakes_waiting_pollers);
            case!(webhooks_are_listed_and_deleted);
            case!(deliveries_fan_out_by_type_and_namespace);
            case!(delivery_leases_fence_stale_workers);
            case!(concurrent_claimers_share_the_outbox);
            case!(audit_trail_filters_and_pages);
            case!(retention_sweeps_in_bounded_batches);
            case!(close_lets_pending_writes_finish);
            case!(device_logins_are_decided_once_and_taken_once);
        })*
    };
}

#[cfg(not(feature = "pg-tests"))]
stores!(sqlite_memory, sqlite_file);
#[cfg(feature = "pg-tests")]
stores!(sqlite_memory, sqlite_file, postgres);

/// Two handles on one database, and whatever must live as long as they.
type Pair = (
    Arc<dyn MetaStore>,
    Arc<dyn MetaStore>,
    Option<tempfile::TempDir>,
);

/// Two stores opened on one SQLite file, as the server and `warren admin reindex` would.
async fn sqlite_pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let a = warren::db::open(&url).await.unwrap();
    let b = warren::db::open(&url).await.unwrap();
    (a, b, Some(dir))
}

/// Two stores opened independently on one PostgreSQL database: two nodes.
#[cfg(feature = "pg-tests")]
async fn postgres_pair() -> Pair {
    let url = pg::fresh_database().await;
    let a = warren::db::open(&url).await.unwrap();
    let b = warren::db::open(&url).await.unwrap();
    (a, b, None)
}

macro_rules! pairs {
    ($($pair:ident),*) => {
        $(mod $pair {
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $name() {
                        let (a, b, _dir) = super::$pair().await;
                        super::$name(a, b).await
                    }
                };
            }
            case!(two_handles_poll_every_event_once);
            case!(two_handles_never_share_a_claim);
            case!(a_stale_lease_cannot_finish_on_any_handle);
            case!(two_handles_take_an_approved_login_once);
        })*
    };
}

#[cfg(not(feature = "pg-tests"))]
pairs!(sqlite_pair);
#[cfg(feature = "pg-tests")]
pairs!(sqlite_pair, postgres_pair);

/// What only PostgreSQL can show: its many writers, held open by hand.
#[cfg(feature = "pg-tests")]
mod pg {
    use super::*;
    use sqlx::{Connection, Executor, PgConnection};

    /// A new, empty database on the server at `WARREN_TEST_PG_URL` (left for the throwaway
    /// server to take with it).
    pub async fn fresh_database() -> String {
        let url = std::env::var("WARREN_TEST_PG_URL")
            .expect("pg-tests needs WARREN_TEST_PG_URL (scripts/test starts a server)");
        let mut bytes = [0u8; 8];
        rand::fill(&mut bytes);
        let name = format!("t_{}", hex::encode(bytes));
        let mut admin = PgConnection::connect(&url).await.unwrap();
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let base = url.rsplit_once('/').expect("a database URL").0;
        format!("{base}/{name}")
    }

    /// The sequence-gap problem: an appender that took its position but has not committed,
    /// and a later one that would commit first. The later one waits; a poller sees neither
    /// until the earlier commits, then both, in position and time order, each once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_commit_is_neither_skipped_nor_overtaken() {
        let url = fresh_database().await;
        let store = warren::db::open(&url).await.unwrap();
        setup(&*store).await;
        write(&*store, "a", "first", "file.written").await;
        let first = store.recent_events(&ws(), 1).await.unwrap().remove(0);

        // An appending transaction, as the store makes them, held open here.
        let mut held = PgConnection::connect(&url).await.unwrap();
        held.execute("BEGIN").await.unwrap();
        let (pos, at): (i64, i64) = sqlx::query_as(
            "UPDATE event_heads SET pos = pos + 1, at = GREATEST(at + 1, warren_now())
             WHERE workspace_id = $1 RETURNING pos, at",
        )
        .bind(ws().as_str())
        .fetch_one(&mut held)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO events (id, type, workspace_id, namespace, pos, created_at, data)
             VALUES ('evt-held', 'file.written', $1, 'a', $2, $3, '{}')",
        )
        .bind(ws().as_str())
        .bind(pos)
        .bind(at)
        .execute(&mut held)
        .await
        .unwrap();

        let later = {
            let store = Arc::clone(&store);
            tokio::spawn(async move { write(&*store, "b", "later", "file.written").await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !later.is_finished(),
            "the later append waits for the held one"
        );
        let by_position = store
            .events_after(&ws(), None, first.seq, 10)
            .await
            .unwrap();
        let by_time = store
            .query_events(&EventQuery {
                since: Some(first.created_at),
                ..query(10)
            })
            .await
            .unwrap();
        assert!(
            by_position.is_empty() && by_time.is_empty(),
            "nothing is visible yet"
        );

        held.execute("COMMIT").await.unwrap();
        later.await.unwrap();
        let by_position = store
            .events_after(&ws(), None, first.seq, 10)
            .await
            .unwrap();
        let mut by_time = store
            .query_events(&EventQuery {
                since: Some(first.created_at),
                ..query(10)
            })
            .await
            .unwrap();
        by_time.reverse();
        for seen in [&by_position, &by_time] {
            assert_eq!(seen.len(), 2);
            assert_eq!(seen[0].id.as_str(), "evt-held");
            assert!(seen[0].seq < seen[1].seq);
            assert!(seen[0].created_at < seen[1].created_at);
        }
        assert_eq!(ids(&by_position), ids(&by_time));
    }

    /// Statements this database has run, the counting query's own left out. Each statement is
    /// one round trip (the store pipelines nothing and, outside a transaction, sends no
    /// BEGIN or COMMIT); statements run inside a function are not counted, as none of them
    /// crosses the network.
    async fn statements(conn: &mut PgConnection) -> i64 {
        sqlx::query_scalar(
            "SELECT COALESCE(sum(s.calls), 0)::bigint FROM pg_stat_statements s
             JOIN pg_database d ON d.oid = s.dbid
             WHERE d.datname = current_database() AND s.query NOT LIKE '%pg_stat_statements%'",
        )
        .fetch_one(conn)
        .await
        .unwrap()
    }

    /// The hot paths in round trips: a write, a delete (of something or of nothing) and an
    /// exec's sync-back, however many paths it changes, are one statement each, their event
    /// appends and webhook fan-out included.
    #[tokio::test]
    async fn each_hot_path_is_one_round_trip() {
        let url = fresh_database().await;
        let store = warren::db::open(&url).await.unwrap();
        setup(&*store).await;
        let mut stats = PgConnection::connect(&url).await.unwrap();
        stats
            .execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .expect("scripts/pg preloads pg_stat_statements");
        let a = ns("alice");
        let sync_back = |n: usize| -> (Vec<TreeOp>, Vec<NewEvent>) {
            let mut ops = vec![TreeOp::Dir(p("out"), Micros::now())];
            ops.extend((0..n).map(|i| TreeOp::File(file(&format!("out/f{i}"), 1))));
            ops.push(TreeOp::Symlink {
                path: p("link"),
                target: "out/f0".into(),
                mtime: Micros::now(),
            });
            ops.push(TreeOp::Delete(p("gone")));
            let events = (0..n).map(|_| ev("file.written", Some("alice"))).collect();
            (ops, events)
        };
        write(&*store, "alice", "gone/x", "file.written").await;

        let mut cost = Vec::new();
        for round in 0..2 {
            let t0 = statements(&mut stats).await;
            write(&*store, "alice", &format!("w{round}"), "file.written").await;
            let t1 = statements(&mut stats).await;
            let removed = store
                .commit_delete(
                    &lock_delete(&ws(), &a, &p(&format!("w{round}"))).await,
                    &ev("file.deleted", Some("alice")),
                )
                .await
                .unwrap();
            assert_eq!(removed, Some(vec![p(&format!("w{round}"))]));
            let t2 = statements(&mut stats).await;
            let nothing = store
                .commit_delete(
                    &lock_delete(&ws(), &a, &p("never")).await,
                    &ev("file.deleted", Some("alice")),
                )
                .await
                .unwrap();
            assert_eq!(nothing, None);
            let t3 = statements(&mut stats).await;
            let (ops, events) = sync_back(200);
            let (g0, g1) = store
                .commit_tree_ops(&lock_namespace(&ws(), &a).await, &ops, &events)
                .await
                .unwrap();
            assert_eq!(g1, g0 + 1);
            let t4 = statements(&mut stats).await;
            cost.push([t1 - t0, t2 - t1, t3 - t2, t4 - t3]);
        }
        // The first round prepares each statement; preparing is no extra round trip either.
        assert_eq!(
            cost,
            [[1, 1, 1, 1], [1, 1, 1, 1]],
            "write, delete, delete of nothing, sync-back"
        );
        let tree = store.tree(&ws(), &a).await.unwrap();
        assert_eq!(tree.len(), 1 + 200 + 1, "out/, its files and the link");
        assert_eq!(
            store.recent_events(&ws(), 1000).await.unwrap().len(),
            1 + 2 * (2 + 200)
        );
    }

    /// Ends the database session behind `fence` and waits until the server has let its locks
    /// go, as when a node's lock connection is cut or the database restarts under it.
    async fn lose(conn: &mut PgConnection, fence: warren::db::Fence) {
        let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
            .bind(fence.session)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert!(ended, "the lock session must end");
    }

    /// A node whose cluster locks were lost (the session holding them ended) cannot commit:
    /// not a write (to a namespace that exists, and to one that does not yet), a delete, a
    /// sync-back or a tree replacement. Each refusal is a retryable `Unavailable` and changes
    /// nothing; the same commits under locks still held go through. Without the fence each
    /// of these commits would land, since the commit's own connection is healthy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_whose_cluster_locks_were_lost_is_refused() {
        let url = fresh_database().await;
        let store = warren::db::open(&url).await.unwrap();
        setup(&*store).await;
        let cluster = warren::coord::Clustered::new(Arc::clone(&store), Default::default());
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let a = ns("alice");
        write(&*store, "alice", "kept", "file.written").await;
        let generation = store.generation(&ws(), &a).await.unwrap();
        let unavailable = |r: warren::db::Result<()>, what: &str| {
            assert!(
                matches!(r, Err(warren::db::Error::Unavailable(_))),
                "{what}: {r:?}"
            );
        };

        for (namespace, path) in [("alice", "new"), ("bob", "first")] {
            let f = file(path, 1);
            let lock = cluster
                .lock_write(&ws(), &ns(namespace), &f.path)
                .await
                .unwrap();
            lose(&mut admin, lock.fence().expect("cluster locks are fenced")).await;
            let r = store
                .commit_write(&lock, &f, &ev("file.written", Some(namespace)))
                .await;
            unavailable(r, &format!("a write to {namespace}"));
            assert_eq!(
                store
                    .get_entry(&ws(), &ns(namespace), &f.path)
                    .await
                    .unwrap(),
                None
            );
        }
        assert_eq!(store.generation(&ws(), &ns("bob")).await.unwrap(), 0);

        let lock = cluster.lock_delete(&ws(), &a, &p("kept")).await.unwrap();
        lose(&mut admin, lock.fence().unwrap()).await;
        let r = store
            .commit_delete(&lock, &ev("file.deleted", Some("alice")))
            .await
            .map(drop);
        unavailable(r, "a delete");
        drop(lock);

        let lock = cluster.lock_namespace(&ws(), &a).await.unwrap();
        lose(&mut admin, lock.fence().unwrap()).await;
        let ops = [TreeOp::File(file("synced", 1)), TreeOp::Delete(p("kept"))];
        let r = store
            .commit_tree_ops(&lock, &ops, &[ev("file.written", Some("alice"))])
            .await
            .map(drop);
        unavailable(r, "a sync-back");
        let r = store
            .replace_tree(
                &lock,
                &[file("restored", 1)],
                &ev("snapshot.restored", Some("alice")),
            )
            .await;
        unavailable(r, "a tree replacement");
        drop(lock);

        let paths: Vec<String> = store
            .tree(&ws(), &a)
            .await
            .unwrap()
            .iter()
            .map(|e| e.path.as_str().to_owned())
            .collect();
        assert_eq!(paths, ["kept"], "nothing a fenced commit made is there");
        assert_eq!(store.generation(&ws(), &a).await.unwrap(), generation);
        assert_eq!(store.recent_events(&ws(), 100).await.unwrap().len(), 1);

        // Held locks still commit, in a namespace that exists and one that does not.
        for (namespace, path) in [("alice", "new"), ("bob", "first")] {
            let f = file(path, 1);
            let lock = cluster
                .lock_write(&ws(), &ns(namespace), &f.path)
                .await
                .unwrap();
            store
                .commit_write(&lock, &f, &ev("file.written", Some(namespace)))
                .await
                .unwrap();
        }
        let lock = cluster.lock_delete(&ws(), &a, &p("kept")).await.unwrap();
        let removed = store
            .commit_delete(&lock, &ev("file.deleted", Some("alice")))
            .await
            .unwrap();
        assert_eq!(removed, Some(vec![p("kept")]));
        drop(lock);
        let lock = cluster.lock_namespace(&ws(), &a).await.unwrap();
        store
            .commit_tree_ops(&lock, &[TreeOp::File(file("synced", 1))], &[])
            .await
            .unwrap();
        store
            .replace_tree(
                &lock,
                &[file("restored", 1)],
                &ev("snapshot.restored", Some("alice")),
            )
            .await
            .unwrap();
        assert_eq!(store.tree(&ws(), &a).await.unwrap().len(), 1);
    }

    /// Servers starting together on an empty database all come up, with one default workspace.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stores_opening_a_new_database_together_agree_on_one_default() {
        let url = fresh_database().await;
        let opened = futures::future::join_all((0..4).map(|i| {
            let url = url.clone();
            async move {
                let store = warren::db::open(&url).await.unwrap();
                let candidate = WorkspaceId::parse(&format!("ws-000000000000000{i}")).unwrap();
                store
                    .ensure_default_workspace(&candidate, "default", Micros::now())
                    .await
                    .unwrap()
            }
        }))
        .await;
        let created = opened.iter().filter(|(_, created)| *created).count();
        assert_eq!(created, 1, "{opened:?}");
        assert!(opened.iter().all(|(ws, _)| *ws == opened[0].0));
    }

    /// Path order is bytewise whatever the database's collation (the test server's is ICU,
    /// under which `B` sorts between `a` and `c`).
    #[tokio::test]
    async fn the_test_server_would_catch_a_collation_slip() {
        let url = std::env::var("WARREN_TEST_PG_URL").unwrap();
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let natural: bool = sqlx::query_scalar("SELECT 'B' > 'a'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(natural, "the test server's default collation must not be C");
    }
}
