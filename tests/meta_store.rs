//! The `MetaStore` behaviour suite. Every implementation must pass it unchanged; a backend joins
//! by adding a constructor to the `stores!` invocation at the bottom.

use std::sync::Arc;

use warren::db::{
    EntryKind, Error, FileWrite, KeyRecord, MetaStore, NewEvent, NewKey, Scope, TreeOp,
};
use warren::ids::{EventId, KeyId, Micros};
use warren_storage::{Namespace, NsPath, WorkspaceId};

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
        created_at: Micros::now(),
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

async fn writes_create_parents_and_bump_generation(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let a = ns("alice");
    assert_eq!(store.generation(&ws(), &a).await.unwrap(), 0);
    store
        .commit_write(
            &ws(),
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
    store
        .commit_write(
            &ws(),
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
    store
        .commit_write(&ws(), &a, &file("f", 1), &ev("file.written", Some("alice")))
        .await
        .unwrap();
    store
        .commit_write(
            &ws(),
            &a,
            &file("d/g", 1),
            &ev("file.written", Some("alice")),
        )
        .await
        .unwrap();
    let before = store.recent_events(&ws(), 100).await.unwrap().len();
    for bad in ["f/under-a-file", "d"] {
        assert!(matches!(
            store.check_writable(&ws(), &a, &p(bad)).await,
            Err(Error::Conflict(_))
        ));
        let r = store
            .commit_write(&ws(), &a, &file(bad, 1), &ev("file.written", Some("alice")))
            .await;
        assert!(matches!(r, Err(Error::Conflict(_))), "{bad}: {r:?}");
    }
    assert_eq!(store.recent_events(&ws(), 100).await.unwrap().len(), before);
    assert_eq!(store.generation(&ws(), &a).await.unwrap(), 2);
}

async fn children_are_ordered_dirs_first_then_bytewise(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let a = ns("alice");
    for f in ["b.txt", "A.txt", "zdir/x", "adir/x", "a.txt", "_"] {
        store
            .commit_write(&ws(), &a, &file(f, 1), &ev("file.written", Some("alice")))
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
        store
            .commit_write(&ws(), &a, &file(f, 1), &ev("file.written", Some("alice")))
            .await
            .unwrap();
    }
    let mut removed: Vec<String> = store
        .commit_delete(&ws(), &a, &p("a"), &ev("file.deleted", Some("alice")))
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
        .commit_delete(&ws(), &a, &p("a"), &ev("file.deleted", Some("alice")))
        .await
        .unwrap();
    assert!(missing.is_none());
}

async fn namespaces_do_not_see_each_other(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    store
        .commit_write(
            &ws(),
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
            .commit_delete(&ws(), &b, &p("secret"), &ev("file.deleted", Some("bob")))
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
        .commit_tree_ops(&ws(), &a, &ops, &events)
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
    let r = store.commit_tree_ops(&ws(), &a, &more, &events).await;
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
        match futures::FutureExt::now_or_never(store.commit_write(&ws(), &a, &f, &e)) {
            Some(r) => r.unwrap(),
            None => abandoned += 1,
        }
        store
            .commit_write(
                &ws(),
                &a,
                &file("kept", 1),
                &ev("file.written", Some("alice")),
            )
            .await
            .unwrap();
        store
            .commit_delete(&ws(), &a, &p("kept"), &ev("file.deleted", Some("alice")))
            .await
            .unwrap()
            .unwrap();
    }
    assert!(abandoned > 0, "no write was abandoned: nothing was tested");
    // Every write that left a row left its event and its generation step, and nothing else did.
    let present = store.tree(&ws(), &a).await.unwrap().len() as u64;
    let events = store.recent_events(&ws(), 1000).await.unwrap();
    let written = |name: &str| events.iter().filter(|e| e.kind == name).count() as u64;
    assert_eq!(written("file.written"), 40 + present);
    assert_eq!(written("file.deleted"), 40);
    assert_eq!(store.generation(&ws(), &a).await.unwrap(), 80 + present);
}

/// Concurrent writes are committed together; a bad one among them fails alone and takes
/// nothing else with it.
async fn concurrent_writes_fail_alone(store: Arc<dyn MetaStore>) {
    setup(&*store).await;
    let a = ns("alice");
    for path in ["f", "d/inner"] {
        store
            .commit_write(
                &ws(),
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
            let r = store
                .commit_write(
                    &ws(),
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
            case!(conflicts_are_refused_without_side_effects);
            case!(children_are_ordered_dirs_first_then_bytewise);
            case!(delete_removes_exactly_the_subtree);
            case!(namespaces_do_not_see_each_other);
            case!(large_tree_commits_are_whole);
            case!(abandoned_writes_are_whole_or_absent);
            case!(concurrent_writes_fail_alone);
        })*
    };
}

stores!(sqlite_memory, sqlite_file);
