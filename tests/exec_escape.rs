//! The exec escape suite: an agent locked to `attacker` runs commands that try to read another
//! namespace's files, the host's files, the server's secrets and environment, or to break the
//! limits. Through the public API only. After every attempt nothing the attacker can see
//! (stdout, stderr, or what its namespace syncs back, read through the file API and the next
//! exec) may contain a canary, and the server must still serve.

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use support::{Client, TestServer};

/// Split so the literal never appears in a command the attacker sends.
const CANARY_A: &str = "CANARY-";
const CANARY_B: &str = "5e1f0d";

fn canary() -> String {
    format!("{CANARY_A}{CANARY_B}")
}

struct Scene {
    srv: TestServer,
    attacker: Client,
    host_canary: std::path::PathBuf,
    secrets: Vec<String>,
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.host_canary);
    }
}

async fn scene() -> Scene {
    let srv = TestServer::start().await;
    let victim = srv.agent("victim").await;
    victim.write("secret.txt", &canary()).await;
    // The victim's working copy is warm on this host's disk while the attacker runs.
    victim.sh("cat workspace/secret.txt > /dev/null").await;
    let host_canary = std::env::temp_dir().join(format!("warren-host-{}", rand_hex()));
    std::fs::write(&host_canary, canary()).unwrap();
    let secret = std::fs::read_to_string(srv.dir.path().join("server.secret")).unwrap_or_default();
    let attacker = srv.agent("attacker").await;
    attacker.write("mine.txt", "mine").await;
    Scene {
        secrets: [
            support::ADMIN_KEY.to_owned(),
            secret,
            victim.key.clone().unwrap(),
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect(),
        srv,
        attacker,
        host_canary,
    }
}

fn rand_hex() -> String {
    format!(
        "{:016x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

impl Scene {
    fn assert_no_leak(&self, what: &str, text: &str) {
        assert!(!text.contains(&canary()), "{what}: leaked a canary: {text}");
        for s in &self.secrets {
            assert!(
                !text.contains(s.as_str()),
                "{what}: leaked a secret: {text}"
            );
        }
    }

    /// Runs one attempt; returns the response after checking it leaks nothing.
    async fn attempt(&self, what: &str, command: &str) -> Value {
        let r = self.attacker.exec(command).await;
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::REQUEST_TIMEOUT,
            "{what}: {} {:?}",
            r.status,
            r.json
        );
        self.assert_no_leak(what, &String::from_utf8_lossy(&r.bytes));
        self.assert_synced_clean(what).await;
        r.json
    }

    /// Everything in the attacker's namespace, read through the file API, is clean.
    async fn assert_synced_clean(&self, what: &str) {
        for p in self.attacker.paths("", true).await {
            let r = self
                .attacker
                .download(p.trim_start_matches("workspace/"))
                .await;
            self.assert_no_leak(
                &format!("{what}: synced {p}"),
                &String::from_utf8_lossy(&r.bytes),
            );
            let r = self.attacker.read(&p).await;
            self.assert_no_leak(
                &format!("{what}: read {p}"),
                &String::from_utf8_lossy(&r.bytes),
            );
        }
        assert_eq!(
            self.srv.anonymous().get("/healthz").await.status,
            StatusCode::OK
        );
    }

    fn host(&self) -> String {
        self.host_canary.display().to_string()
    }

    fn data_dir(&self) -> String {
        self.srv.dir.path().display().to_string()
    }
}

fn stdout(v: &Value) -> &str {
    v["stdout"].as_str().unwrap_or("")
}

#[tokio::test]
async fn filesystem_escapes() {
    let s = scene().await;
    let host = s.host();
    let data = s.data_dir();
    let grep = format!(
        "grep -rl '{CANARY_A}''{CANARY_B}' / --exclude-dir=proc --exclude-dir=sys 2>/dev/null; echo done"
    );
    let attempts: Vec<(&str, String)> = vec![
        ("T01 shadow and passwd", "cat /etc/shadow; cat /etc/passwd".into()),
        ("T02 host file by absolute path", format!("cat {host}")),
        ("T03 list the host", "ls -la / /root /home /srv /var /tmp /run /mnt 2>&1".into()),
        ("T04 climb with ..", "cd ../../../..; pwd; ls; cat ../../../../etc/hostname".into()),
        ("T05 symlink to / then walk", format!("ln -s / workspace/root; cat workspace/root{host}; ls workspace/root/home")),
        ("T06 absolute symlinks planted for sync-back", format!(
            "cd workspace; ln -s {host} leak.txt; ln -s {data}/server.secret leak2; ln -s {data}/warren.db leak3; ln -s /etc/hostname leak4")),
        ("T07 relative symlinks toward other working copies", "cd workspace; \
            for d in ../victim ../../victim ../../../exec ../../../../ ../../../../..; do ln -s \"$d\" rel_$(echo $d | tr -c a-z _); done; \
            ln -s ../../../../../../../../../../tmp tmp_link".into()),
        ("T08 read planted links in the next exec", "cd workspace; cat leak.txt leak2 leak3 leak4 2>&1; ls -la rel_* tmp_link/ 2>&1".into()),
        ("T09 hard links to host files", "ln /etc/passwd workspace/h1 2>&1; ln /usr/bin/bash workspace/h2 2>&1; ln /etc/ld.so.cache workspace/h3 2>&1; ls workspace".into()),
        ("T10 grep the whole visible filesystem for the canary", grep.clone()),
        ("T11 mountinfo reveals no tenant", "cat /proc/self/mountinfo".into()),
        ("T12 paths from mountinfo lead nowhere", "for p in $(grep -o '[a-z]*dir=[^,]*' /proc/self/mountinfo | cut -d= -f2); do ls -la \"$p\" \"$p/..\" 2>&1; ln -s \"$p/..\" workspace/up_$RANDOM; done".into()),
        ("T13 data directory by its host path", format!("ls -la {data} 2>&1; cat {data}/server.secret {data}/admin.key 2>&1")),
        ("T14 /proc/1 environment and command line", "tr '\\0' '\\n' < /proc/1/environ; tr '\\0' ' ' < /proc/1/cmdline; echo; env".into()),
        ("T15 other processes' roots", "ls /proc; for p in /proc/[0-9]*; do ls $p/root/ 2>&1 | head -3; done".into()),
        ("T16 inherited descriptors", "ls -l /proc/self/fd; for fd in 3 4 5 6 7 8 9 10; do cat <&$fd 2>&1 | head -c 200; done".into()),
        ("T17 setuid bit", "cp /usr/bin/id workspace/suid; chmod 4755 workspace/suid; ls -l workspace/suid".into()),
        ("T18 device nodes", "mknod workspace/dev b 8 0 2>&1; mknod /tmp/mem c 1 1 2>&1; cat /dev/vda /dev/sda /dev/mem 2>&1 | head -c 100".into()),
        ("T19 FIFO and socket in the workspace", "mkfifo workspace/fifo; python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.bind('workspace/sock')\"; ls -l workspace".into()),
        ("T20 /sys and kernel interfaces", "ls /sys 2>&1; cat /proc/sys/kernel/hostname; echo x > /proc/sysrq-trigger 2>&1; hostname evil 2>&1; hostname".into()),
        ("T21 write outside the workspace", "for d in / /usr /etc /bin /home /home/agent/..; do touch $d/x 2>&1; done".into()),
        ("T22 overwrite /proc/self/exe", "cp /dev/null /proc/self/exe 2>&1; echo x > /proc/self/exe 2>&1; true".into()),
        ("T22b file/symlink swap racing the sync", format!(
            "cd workspace; (while true; do ln -sfn {host} race.tmp; mv -fT race.tmp race; echo safe > race.tmp; mv -fT race.tmp race; done) & \
             (while true; do ln -sfn ../../../../../../{host} race2.tmp; mv -fT race2.tmp race2; mkdir -p race2.d; mv -fT race2.d race2 2>/dev/null; rm -rf race2; done) & \
             sleep 0.5; echo swapped")),
    ];
    for (what, cmd) in &attempts {
        s.attempt(what, cmd).await;
    }
    // What the planted links became: links, never their targets' bytes.
    let listing = s.attacker.list("", false).await;
    let leak = listing.json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "workspace/leak.txt")
        .cloned()
        .expect("the link is kept as a link");
    assert_ne!(leak["type"], "file", "{leak:?}");
    // Special files are not synced, and the response says so.
    let r = s.attacker.exec("mkfifo workspace/fifo2; true").await;
    assert!(
        r.json["not_synced"].to_string().contains("workspace/fifo2"),
        "{:?}",
        r.json
    );
    let out = s
        .attacker
        .sh("stat -c '%a %n' workspace/suid; ls workspace")
        .await;
    assert!(out.starts_with("755 workspace/suid"), "{out}");
    assert!(
        !out.contains("fifo") && !out.contains("sock") && !out.contains("h1"),
        "{out}"
    );
    // The victim's namespace is untouched.
    let victim = s.srv.agent("victim").await;
    assert_eq!(victim.paths("", true).await, ["workspace/secret.txt"]);
    let mi = s.attacker.sh("cat /proc/self/mountinfo").await;
    for word in ["victim", "attacker", s.srv.ws.as_str()] {
        assert!(!mi.contains(word), "mountinfo names {word}: {mi}");
    }
    let env = s.attacker.sh("tr '\\0' '\\n' < /proc/1/environ").await;
    assert_eq!(env, "", "bwrap's pid 1 keeps no environment");
    let fds = s.attacker.sh("ls /proc/self/fd").await;
    assert_eq!(
        fds, "0\n1\n2\n3\n",
        "only stdio (and ls's own directory) are open"
    );
}

#[tokio::test]
async fn kernel_and_network_escapes() {
    let s = scene().await;
    let port = s.srv.base.rsplit(':').next().unwrap().to_owned();
    let syscall = |nr: u32| {
        format!(
            "python3 -c \"import ctypes; l=ctypes.CDLL(None, use_errno=True); r=l.syscall({nr},0,0,0,0,0); print({nr}, r, ctypes.get_errno())\""
        )
    };
    let attempts: Vec<(&str, String)> = vec![
        ("T23 mount, unshare, chroot", "mount -t tmpfs x /tmp 2>&1; unshare -Urm true 2>&1; unshare -U true 2>&1; chroot / true 2>&1; true".into()),
        ("T24 ptrace", syscall(101)),
        ("T25 bpf", syscall(321)),
        ("T26 keyctl", syscall(250)),
        ("T27 userfaultfd", syscall(323)),
        ("T28 io_uring_setup", syscall(425)),
        ("T29 perf_event_open", syscall(298)),
        ("T30 open_by_handle_at", syscall(304)),
        ("T31 setns into pid 1's namespaces", "python3 -c \"import os; [print(n, os.open('/proc/1/ns/'+n, os.O_RDONLY)) for n in ['mnt','net','user','pid']]\" 2>&1; nsenter -t 1 -m true 2>&1; true".into()),
        ("T32 kill everything", "kill -9 -1 2>&1; true".into()),
        ("T33 the server's port on loopback", format!("python3 -c \"import socket; s=socket.create_connection(('127.0.0.1', {port}), timeout=2); s.send(b'GET /healthz HTTP/1.0\\r\\n\\r\\n'); print(s.recv(100))\" 2>&1; true")),
        ("T34 the outside world", "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 80), timeout=2)\" 2>&1; getent hosts example.com; cat /proc/net/dev; true".into()),
        ("T35 the controlling terminal (TIOCSTI)", "python3 -c \"open('/dev/tty')\" 2>&1; true".into()),
        ("T36 packet sockets", "python3 -c \"import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\" 2>&1; true".into()),
    ];
    for (what, cmd) in &attempts {
        let r = s.attempt(what, cmd).await;
        let out = format!("{}{}", stdout(&r), r["stderr"].as_str().unwrap_or(""));
        if cmd.starts_with("python3 -c \"import ctypes") {
            // syscall() returns -1 with EPERM from the filter.
            assert!(out.trim_end().ends_with(" -1 1"), "{what}: {out}");
        }
        if what.starts_with("T33") || what.starts_with("T34") {
            assert!(
                !out.contains("200 OK") && !out.contains("b'"),
                "{what}: connected: {out}"
            );
        }
        if what.starts_with("T36") || what.starts_with("T23") {
            assert!(
                out.contains("ermission") || out.contains("not permitted"),
                "{what}: {out}"
            );
        }
    }
    assert_eq!(
        s.attacker
            .sh("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
            .await,
        "lo\n"
    );
}

#[tokio::test]
async fn resource_attacks_are_contained() {
    let s = scene().await;
    // Fork bomb: contained by the pids limit, the call returns, the server lives.
    let r = s
        .attempt(
            "T37 fork bomb",
            "bomb() { bomb | bomb & }; bomb; sleep 1; echo alive",
        )
        .await;
    assert!(
        r["stderr"].as_str().unwrap().contains("process limit"),
        "{r:?}"
    );
    // Memory bomb: OOM-killed and reported.
    let r = s
        .attempt(
            "T38 memory bomb",
            "python3 -c \"x = bytearray(3 * 1024**3); print(len(x))\"",
        )
        .await;
    assert_eq!(r["oom_killed"], true, "{r:?}");
    assert_ne!(r["exit_code"], 0);
    // 200 MB of stdout: cut, bounded, said so.
    let r = s
        .attempt(
            "T39 200 MB of stdout",
            "head -c 200000000 /dev/zero | tr '\\0' x",
        )
        .await;
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1 << 20);
    assert_eq!(r["stdout_truncated"], true);
    // Filling /tmp and the workspace: ENOSPC at the caps, nothing unbounded synced.
    let r = s
        .attempt(
            "T40 fill /tmp",
            "dd if=/dev/zero of=/tmp/fill bs=1M count=2000 2>&1; true",
        )
        .await;
    assert!(stdout(&r).contains("No space left"), "{r:?}");
    let r = s
        .attempt("T41 fill the workspace", "dd if=/dev/zero of=workspace/fill bs=1M count=3000 2>&1; rm -f workspace/fill; echo cleaned")
        .await;
    assert!(
        stdout(&r).contains("No space left")
            || stdout(&r).contains("Killed")
            || r["oom_killed"] == true,
        "{r:?}"
    );
    assert_eq!(s.attacker.sh("echo still works").await, "still works\n");
}
