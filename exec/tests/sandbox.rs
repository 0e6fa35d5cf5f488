//! The sandbox on this host: a real bubblewrap run over a real overlay.
//! Needs root and bubblewrap; `scripts/test` provides both.

use std::io::Write;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use warren_exec::{Change, Limits, Outcome, Overlay, Sandbox, SandboxConfig, ScanLimits, WorkCopy};

async fn sandbox(base: &std::path::Path, limits: Limits) -> Sandbox {
    Sandbox::probe(SandboxConfig {
        bwrap: "/usr/bin/bwrap".into(),
        base_dir: base.join("exec"),
        uid: 60_011,
        gid: 60_011,
        limits,
    })
    .await
    .expect("this host must be able to run sandboxes")
}

const SCAN: ScanLimits = ScanLimits {
    max_entries: 1000,
    max_file_bytes: 1 << 20,
    max_path_bytes: 768,
};

#[tokio::test]
async fn runs_a_command_and_reports_its_changes() {
    let tmp = tempfile::Builder::new()
        .prefix("warren-exec")
        .tempdir_in("/tmp")
        .unwrap();
    let sb = sandbox(tmp.path(), Limits::default()).await;
    let mut wc = WorkCopy::create(sb.work_copy_dir(), sb.owner()).unwrap();
    wc.make_dir("d").unwrap();
    let mut f = wc.create_file("d/a.txt", 0o644).unwrap();
    f.write_all(b"hello\n").unwrap();
    wc.file_written("d/a.txt", "x".into(), 0o644, 6);
    let mut f = wc.create_file("gone", 0o644).unwrap();
    f.write_all(b"bye\n").unwrap();

    let mut ov = Overlay::mount(sb.run_dir(), wc.path(), sb.owner(), 1 << 20, 100).unwrap();
    let r = sb
        .run(
            ov.merged(),
            "pwd; id -u; cat workspace/d/a.txt; echo new > workspace/n; rm workspace/gone; \
             ln -s /etc/passwd workspace/l; echo err >&2; exit 3",
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::Exited(3));
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "/home/agent\n1000\nhello\n"
    );
    assert_eq!(String::from_utf8_lossy(&r.stderr), "err\n");
    ov.unmount_merged();
    let scan = ov.scan(SCAN).unwrap();
    let summary: Vec<String> = scan
        .changes
        .iter()
        .map(|c| match c {
            Change::Deleted(p) => format!("-{p}"),
            Change::Dir { path, .. } => format!("d{path}"),
            Change::File { path, size, .. } => format!("f{path}:{size}"),
            Change::Symlink { path, target } => format!("l{path}->{target}"),
        })
        .collect();
    assert_eq!(summary, ["-gone", "ll->/etc/passwd", "fn:4"]);
    drop(ov);
    wc.destroy();
}

#[tokio::test]
async fn timeout_kills_the_whole_tree() {
    let tmp = tempfile::Builder::new()
        .prefix("warren-exec")
        .tempdir_in("/tmp")
        .unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let sb = sandbox(tmp.path(), limits).await;
    let wc = WorkCopy::create(sb.work_copy_dir(), sb.owner()).unwrap();
    let ov = Overlay::mount(sb.run_dir(), wc.path(), sb.owner(), 1 << 20, 100).unwrap();
    let r = sb
        .run(
            ov.merged(),
            "(setsid sleep 60 &); sleep 60 & echo started; sleep 60",
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.outcome, Outcome::TimedOut);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "started\n");
    assert!(r.duration < Duration::from_secs(20));
    drop(ov);
    wc.destroy();
}

/// Processes running as `uid` on this host.
fn processes_of(uid: u32) -> usize {
    process_dirs(uid).len()
}

fn process_dirs(uid: u32) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == uid))
        .map(|e| e.path())
        .collect()
}

/// The cgroup directories the processes of `uid` are in (v1 controllers or the v2 group).
fn cgroups_of(uid: u32) -> Vec<std::path::PathBuf> {
    let mut dirs = Vec::new();
    for p in process_dirs(uid) {
        let Ok(text) = std::fs::read_to_string(p.join("cgroup")) else {
            continue;
        };
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
            let (Some(controllers), Some(path)) = (controllers, path) else {
                continue;
            };
            if !path.starts_with("/warren/") {
                continue;
            }
            let base = match controllers {
                "" => std::path::PathBuf::from("/sys/fs/cgroup"),
                c if c.split(',').any(|c| c == "memory" || c == "pids") => {
                    std::path::Path::new("/sys/fs/cgroup").join(c)
                }
                _ => continue,
            };
            dirs.push(base.join(path.trim_start_matches('/')));
        }
    }
    dirs
}

/// Launchers started ahead of their exec (already in a cgroup, waiting for a script) run
/// exactly like fresh ones, and none outlives its sandbox.
#[tokio::test]
async fn prestarted_launchers_run_like_fresh_ones() {
    let tmp = tempfile::Builder::new()
        .prefix("warren-exec")
        .tempdir_in("/tmp")
        .unwrap();
    let uid = 60_012;
    let sb = Sandbox::probe(SandboxConfig {
        bwrap: "/usr/bin/bwrap".into(),
        base_dir: tmp.path().join("exec"),
        uid,
        gid: uid,
        limits: Limits::default(),
    })
    .await
    .unwrap();
    // The probe's own run left launchers waiting for the first exec.
    assert!(sb.prestarted() > 0);
    let wc = WorkCopy::create(sb.work_copy_dir(), sb.owner()).unwrap();
    for i in 0..6 {
        let before = sb.prestarted();
        let ov = Overlay::mount(sb.run_dir(), wc.path(), sb.owner(), 1 << 20, 100).unwrap();
        let r = sb
            .run(
                ov.merged(),
                &format!("echo \"run {i}: $(cat)\" 'quoted $HOME'; ls /proc/self/fd; exit {i}"),
                Some(format!("input {i}").into_bytes()),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(r.outcome, Outcome::Exited(i), "{r:?}");
        // Only stdin, stdout, stderr and the descriptor `ls` opens on the directory.
        assert_eq!(
            String::from_utf8_lossy(&r.stdout),
            format!("run {i}: input {i} quoted $HOME\n0\n1\n2\n3\n"),
        );
        assert!(
            r.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(
            before > 0 && sb.prestarted() > 0,
            "run {i} had no launcher waiting"
        );
    }
    // A memory bomb in a prestarted launcher meets its cgroup's limit.
    let small = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    // Its own base directory: a probe clears what it finds there.
    let sb2 = sandbox(&tmp.path().join("second"), small).await;
    assert!(sb2.prestarted() > 0);
    let wc2 = WorkCopy::create(sb2.work_copy_dir(), sb2.owner()).unwrap();
    let ov = Overlay::mount(sb2.run_dir(), wc2.path(), sb2.owner(), 1 << 20, 100).unwrap();
    let r = sb2
        .run(
            ov.merged(),
            "head -c 200000000 /dev/zero | tail > /dev/null",
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(r.oom_killed, "{r:?}");
    drop(ov);
    wc2.destroy();
    drop(sb2);

    assert!(
        processes_of(uid) > 0,
        "the waiting launchers run as the sandbox uid"
    );
    let groups = cgroups_of(uid);
    assert!(
        !groups.is_empty() && groups.iter().all(|g| g.is_dir()),
        "{groups:?}"
    );
    drop(sb);
    // Removed by the drop itself, not by a task a stopping runtime may never run.
    let left: Vec<_> = groups.iter().filter(|g| g.exists()).collect();
    assert!(left.is_empty(), "cgroups left after the sandbox: {left:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while processes_of(uid) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "launchers outlived their sandbox"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wc.destroy();
}
