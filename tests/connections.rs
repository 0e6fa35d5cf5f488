//! Connection handling attacked the way an unauthenticated stranger would: half-open
//! connections by the hundred against a server whose descriptor limit is low (as under a stock
//! systemd unit), a slowloris client trickling headers, and the open-file limit at start. The
//! server runs as its own process (the binary, as operators start it), so its limits are its
//! own.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_KEY: &str = "trove-sk-connections-admin-0123456789";

struct Warren {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Warren {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `warren serve` under `prlimit --nofile=<nofile>`, with the given extra flags.
fn start(nofile: &str, flags: &[&str]) -> Warren {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile={nofile}"))
        .arg(env!("CARGO_BIN_EXE_warren"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(flags)
        .env("WARREN_ADMIN_KEY", ADMIN_KEY)
        .env("WARREN_SECRET", "connections-secret-connections-secret-0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("warren printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("warren listening on http://") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    Warren {
        child,
        addr,
        _dir: dir,
    }
}

/// One plain HTTP/1.1 request on a fresh connection, with a deadline; returns the status.
fn request(addr: &str, method: &str, path: &str, key: Option<&str>, body: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

fn json_request(addr: &str, method: &str, path: &str, key: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// Opens `n` connections that each send the start of a request and then nothing.
fn half_open(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect(addr).ok()?;
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
            Some(s)
        })
        .collect()
}

#[test]
fn half_open_connections_cannot_starve_a_server_with_few_descriptors() {
    // 512 descriptors, as the attack pass used; 600 idle connections would hold them all.
    let w = start("512:512", &["--header-read-timeout", "30s"]);
    let idle = half_open(&w.addr, 600);
    assert!(idle.len() >= 590, "opened {}", idle.len());
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    assert_eq!(request(&w.addr, "GET", "/healthz", None, ""), Some(200));
    // A tenant's write and read, through a key minted now.
    let minted = json_request(&w.addr, "GET", "/v1/me", ADMIN_KEY, "");
    assert!(minted.starts_with("HTTP/1.1 200"), "{minted}");
    let ws = minted
        .split("\"workspace_id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("workspace id")
        .to_owned();
    let key = json_request(
        &w.addr,
        "POST",
        &format!("/v1/workspaces/{ws}/keys"),
        ADMIN_KEY,
        r#"{"name":"t","namespace":"tenant","admin":false}"#,
    );
    let key = key
        .split("\"api_key\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a minted key")
        .to_owned();
    assert_eq!(
        request(
            &w.addr,
            "POST",
            "/write",
            Some(&key),
            r#"{"path":"a.txt","content":"served"}"#
        ),
        Some(200)
    );
    assert_eq!(
        request(
            &w.addr,
            "GET",
            "/v1/files/content?path=a.txt",
            Some(&key),
            ""
        ),
        Some(200)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "service took {:?} with 600 idle connections open",
        started.elapsed()
    );
    drop(idle);
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let w = start("4096:4096", &["--header-read-timeout", "1s"]);
    // Half a request, then silence.
    let mut silent = TcpStream::connect(&w.addr).unwrap();
    silent
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A header line every 300 ms: slowloris.
    let mut trickle = TcpStream::connect(&w.addr).unwrap();
    trickle.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut trickle_closed = None;
    for i in 0..30 {
        std::thread::sleep(Duration::from_millis(300));
        if trickle
            .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
            .is_err()
        {
            trickle_closed = Some(started.elapsed());
            break;
        }
    }
    // Whatever the trickle managed to write, the server must have hung up on both.
    for (what, s) in [("silent", &mut silent), ("trickle", &mut trickle)] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let closed = match s.read(&mut buf) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "{what}: still open after {:?}", started.elapsed());
    }
    assert!(
        trickle_closed.is_none_or(|t| t < Duration::from_secs(8)),
        "{trickle_closed:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    // An ordinary client is unaffected.
    assert_eq!(request(&w.addr, "GET", "/healthz", None, ""), Some(200));
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let w = start("256:4096", &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", w.child.id())).unwrap();
    // prlimit execs warren in place, so its pid is warren's.
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[3..5], ["4096", "4096"], "{line}");
}
