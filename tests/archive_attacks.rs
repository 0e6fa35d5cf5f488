//! Hostile archives through `POST /v1/snapshots/import`, as any tenant key can send them:
//! header-extension bombs, gzip bombs, hidden second gzip members, special files and modes,
//! bad checksums and trailing data, trees that cannot be built, over-long link targets. Each
//! must be refused (400, a short detail, nothing stored) or stored only in canonical form.

mod support;

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::{Client, TestServer};

/// One raw 512-byte ustar header: any name, type, mode and owner can be planted.
fn header(name: &[u8], kind: u8, mode: u32, uid: u32, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
    h[108..115].copy_from_slice(format!("{uid:07o}").as_bytes());
    h[116..123].copy_from_slice(format!("{uid:07o}").as_bytes());
    h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if kind == b'4' {
        h[329..336].copy_from_slice(b"0000010");
        h[337..344].copy_from_slice(b"0000000");
    }
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// A tar stream builder over any writer (so huge members can be streamed into gzip).
struct Tar<W: Write>(W);

impl<W: Write> Tar<W> {
    fn member(&mut self, name: &str, kind: u8, mode: u32, uid: u32, data: &[u8]) -> &mut Self {
        self.raw(
            &header(name.as_bytes(), kind, mode, uid, data.len() as u64, b""),
            data,
        )
    }

    fn raw(&mut self, h: &[u8; 512], data: &[u8]) -> &mut Self {
        self.0.write_all(h).unwrap();
        self.0.write_all(data).unwrap();
        let pad = (512 - data.len() % 512) % 512;
        self.0.write_all(&vec![0u8; pad]).unwrap();
        self
    }

    /// A member declaring `size` bytes of `fill`, streamed.
    fn streamed(&mut self, h: &[u8; 512], size: u64, fill: u8) -> &mut Self {
        self.0.write_all(h).unwrap();
        let chunk = vec![fill; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            self.0.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        let pad = ((512 - size % 512) % 512) as usize;
        self.0.write_all(&vec![0u8; pad]).unwrap();
        self
    }

    fn end(&mut self) -> &mut Self {
        self.0.write_all(&[0u8; 1024]).unwrap();
        self
    }
}

fn gz(build: impl FnOnce(&mut Tar<GzEncoder<Vec<u8>>>)) -> Vec<u8> {
    let mut t = Tar(GzEncoder::new(Vec::new(), Compression::best()));
    build(&mut t);
    t.0.finish().unwrap()
}

async fn import(c: &Client, body: Vec<u8>) -> support::Resp {
    c.send(c.request(Method::POST, "/v1/snapshots/import").body(body))
        .await
}

async fn snapshot_count(c: &Client) -> usize {
    c.get("/v1/snapshots").await.json["snapshots"]
        .as_array()
        .unwrap()
        .len()
}

/// Every object below the server's storage root: nothing of a refused import may remain.
fn stored_objects(srv: &TestServer) -> Vec<String> {
    let root = srv.dir.path().join("objects");
    if !root.exists() {
        return Vec::new();
    }
    support::walk(&root)
        .iter()
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect()
}

async fn refused(srv: &TestServer, c: &Client, what: &str, body: Vec<u8>, expect: &str) {
    let before = stored_objects(srv);
    let r = import(c, body).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {:?}", r.json);
    assert!(
        r.detail().contains(expect),
        "{what}: detail {:?} should say {expect:?}",
        r.detail()
    );
    assert!(
        r.bytes.len() < 2048,
        "{what}: {} byte answer",
        r.bytes.len()
    );
    assert_eq!(stored_objects(srv), before, "{what}: something was left");
}

#[tokio::test]
async fn header_extension_bombs_are_refused_without_buffering_or_echoing_them() {
    let srv = TestServer::start().await;
    let a = srv.agent("attacker").await;
    let victim = srv.agent("victim").await;
    victim.write("still.txt", "here").await;
    const HUGE: u64 = 256 << 20;
    // A GNU long name of 256 MiB (about 256 KB compressed), then an ordinary entry.
    let long_name = gz(|t| {
        t.streamed(
            &header(b"././@LongLink", b'L', 0o644, 0, HUGE, b""),
            HUGE,
            b'A',
        )
        .member("workspace/x", b'0', 0o644, 0, b"x")
        .end();
    });
    assert!(long_name.len() < 2 << 20, "{} byte upload", long_name.len());
    refused(&srv, &a, "GNU long name", long_name, "extended header").await;
    // A GNU long link target, and a PAX record, of the same size.
    let long_link = gz(|t| {
        t.streamed(
            &header(b"././@LongLink", b'K', 0o644, 0, HUGE, b""),
            HUGE,
            b'B',
        )
        .member("workspace/l", b'2', 0o777, 0, b"")
        .end();
    });
    refused(&srv, &a, "GNU long link", long_link, "extended header").await;
    let pax_bomb = gz(|t| {
        let record_len = HUGE;
        t.streamed(
            &header(b"PaxHeader/x", b'x', 0o644, 0, record_len, b""),
            record_len,
            b'C',
        )
        .member("workspace/x", b'0', 0o644, 0, b"x")
        .end();
    });
    refused(&srv, &a, "PAX record", pax_bomb, "extended header").await;

    // A name that fits the cap but is far too long is refused with the name clipped.
    let pax_record = pax("path", &format!("workspace/{}", "N".repeat(60_000)));
    let clipped = gz(|t| {
        t.member("PaxHeader/y", b'x', 0o644, 0, pax_record.as_bytes())
            .member("workspace/y", b'0', 0o644, 0, b"y")
            .end();
    });
    refused(&srv, &a, "60 KB name", clipped, "longer than").await;

    // Long names the way real tools write them still import.
    let made = tempfile::tempdir().unwrap();
    let deep = format!("workspace/{}/{}", "d".repeat(200), "f".repeat(150));
    std::fs::create_dir_all(made.path().join(&deep).parent().unwrap()).unwrap();
    std::fs::write(made.path().join(&deep), "deep").unwrap();
    std::os::unix::fs::symlink("t".repeat(300), made.path().join("workspace/link")).unwrap();
    for format in ["gnu", "pax"] {
        let out = std::process::Command::new("tar")
            .args(["--format", format, "-czf", "-", "workspace"])
            .current_dir(made.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        let r = import(&a, out.stdout).await;
        assert_eq!(r.status, StatusCode::CREATED, "{format}: {:?}", r.json);
        assert_eq!(r.json["file_count"], 1);
        let id = r.json["snapshot_id"].as_str().unwrap();
        let r = a
            .post(&format!("/v1/snapshots/{id}/restore"), Value::Null)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{format}: {:?}", r.json);
        assert_eq!(
            a.read(deep.trim_start_matches("workspace/")).await.json["content"],
            "deep"
        );
    }
    assert_eq!(victim.read("still.txt").await.json["content"], "here");
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_before_anything_is_stored() {
    let srv = TestServer::start().await;
    let a = srv.agent("bomber").await;
    let mut zeros = 0u64;
    let bomb = gz(|t| {
        for i in 0..3 {
            let size = 95 << 20;
            zeros += size;
            let name = format!("workspace/zero{i}");
            t.streamed(&header(name.as_bytes(), b'0', 0o644, 0, size, b""), size, 0);
        }
        t.end();
    });
    assert!(
        (bomb.len() as u64) * 500 < zeros,
        "a {} byte upload expands to {zeros}",
        bomb.len()
    );
    refused(&srv, &a, "gzip bomb", bomb, "expands to more than").await;
    assert_eq!(snapshot_count(&a).await, 0);
    assert_eq!(a.paths("", true).await, Vec::<String>::new());

    // Large but ordinary archives are fine: 40 MiB of text-like data.
    let text: Vec<u8> = (0..40u32 << 20)
        .map(|i| b"abcdefghij klmnopqrstuvwxyz\n"[(i.wrapping_mul(2654435761) >> 27) as usize % 28])
        .collect();
    let ok = gz(|t| {
        t.member("workspace/big.txt", b'0', 0o644, 0, &text).end();
    });
    let r = import(&a, ok).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
}

#[tokio::test]
async fn what_import_stores_is_a_canonical_archive_of_what_it_checked() {
    let srv = TestServer::start().await;
    let a = srv.agent("smuggler").await;

    // (a) A benign first gzip member with no end-of-archive, then a second member holding a
    // block device and a setuid-root file: `tar -xzf` reads both, so import must too.
    let mut two = gz(|t| {
        t.member("workspace/benign.txt", b'0', 0o644, 0, b"benign");
    });
    two.extend(gz(|t| {
        t.member("workspace/disk", b'4', 0o666, 0, b"")
            .member("workspace/rootshell", b'0', 0o4755, 0, b"#!/bin/sh\n")
            .end();
    }));
    refused(
        &srv,
        &a,
        "second gzip member",
        two,
        "entries are not supported",
    )
    .await;

    // (b) Setuid, setgid, sticky and foreign owners are accepted but never stored.
    let upload = gz(|t| {
        t.member("workspace/rootshell", b'0', 0o6755, 0, b"#!/bin/sh\n")
            .member("workspace/sticky/", b'5', 0o1777, 4242, b"")
            .member("workspace/plain.txt", b'0', 0o600, 1000, b"plain")
            .end();
    });
    let r = import(&a, upload.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let id = r.json["snapshot_id"].as_str().unwrap().to_owned();
    let stored = a
        .download_raw(&format!("/v1/snapshots/{id}/download"))
        .await;
    assert_ne!(
        stored, upload,
        "the upload itself must not be what is stored"
    );
    assert_eq!(r.json["size_bytes"], stored.len());
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&stored[..]));
    let mut seen = Vec::new();
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        seen.push((
            e.path().unwrap().display().to_string(),
            h.mode().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("workspace/".to_owned(), 0o755, 0, 0),
            ("workspace/rootshell".to_owned(), 0o755, 0, 0),
            ("workspace/sticky/".to_owned(), 0o755, 0, 0),
            ("workspace/plain.txt".to_owned(), 0o644, 0, 0),
        ]
    );
    // No .upload object is left beside the snapshot.
    let left: Vec<String> = stored_objects(&srv)
        .into_iter()
        .filter(|k| k.ends_with(".upload"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // (c) Corruption gzip's own trailer would catch, and data hidden after the end.
    let good = gz(|t| {
        t.member("workspace/f.txt", b'0', 0o644, 0, b"data").end();
    });
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0xff;
    refused(&srv, &a, "bad CRC", bad_crc, "not a valid tar.gz").await;
    refused(
        &srv,
        &a,
        "cut trailer",
        good[..good.len() - 4].to_vec(),
        "not a valid tar.gz",
    )
    .await;
    let hidden = gz(|t| {
        t.member("workspace/f.txt", b'0', 0o644, 0, b"data").end();
        t.0.write_all(b"hidden payload after the end of the archive")
            .unwrap();
    });
    refused(&srv, &a, "data after the end", hidden, "after its end").await;
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage that is not gzip");
    refused(
        &srv,
        &a,
        "garbage after gzip",
        trailing,
        "not a valid tar.gz",
    )
    .await;
}

#[tokio::test]
async fn trees_that_cannot_be_built_are_refused_at_import() {
    let srv = TestServer::start().await;
    let a = srv.agent("builder").await;
    let cases: [(&str, Vec<(&str, u8)>); 4] = [
        (
            "file, then a directory at the same path",
            vec![
                ("workspace/a", b'0'),
                ("workspace/a/", b'5'),
                ("workspace/a/b", b'0'),
            ],
        ),
        (
            "a file below a file",
            vec![("workspace/a", b'0'), ("workspace/a/b", b'0')],
        ),
        (
            "a file where a directory was implied",
            vec![("workspace/d/x", b'0'), ("workspace/d", b'0')],
        ),
        (
            "a symlink, then a file through it",
            vec![("workspace/l", b'2'), ("workspace/l/x", b'0')],
        ),
    ];
    for (what, entries) in cases {
        let body = gz(|t| {
            for (name, kind) in &entries {
                let link: &[u8] = if *kind == b'2' { b"elsewhere" } else { b"" };
                let data: &[u8] = if *kind == b'0' { b"data" } else { b"" };
                t.raw(
                    &header(name.as_bytes(), *kind, 0o644, 0, data.len() as u64, link),
                    data,
                );
            }
            t.end();
        });
        refused(&srv, &a, what, body, "workspace/").await;
    }
    // Replacing a file by a later file of the same path is what tar -x does: accepted.
    let body = gz(|t| {
        t.member("workspace/a", b'0', 0o644, 0, b"first")
            .member("workspace/a", b'0', 0o644, 0, b"second")
            .end();
    });
    let r = import(&a, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let id = r.json["snapshot_id"].as_str().unwrap();
    let r = a
        .post(&format!("/v1/snapshots/{id}/restore"), Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    assert_eq!(a.read("a").await.json["content"], "second");
}

#[tokio::test]
async fn link_targets_a_working_copy_cannot_hold_are_refused() {
    let srv = TestServer::start().await;
    let a = srv.agent("linker").await;
    for len in [4096usize, 70_000] {
        let record = pax("linkpath", &"t".repeat(len));
        let body = gz(|t| {
            t.member("PaxHeader/l", b'x', 0o644, 0, record.as_bytes())
                .raw(&header(b"workspace/l", b'2', 0o777, 0, 0, b"x"), b"")
                .end();
        });
        if len > 64 * 1024 {
            refused(&srv, &a, "70 KB link target", body, "extended header").await;
        } else {
            refused(&srv, &a, "4096-byte link target", body, "link target").await;
        }
    }
    // 4,095 bytes is the longest a symlink can hold, and works end to end.
    let target = "t".repeat(4095);
    let body = gz(|t| {
        t.member(
            "PaxHeader/l",
            b'x',
            0o644,
            0,
            pax("linkpath", &target).as_bytes(),
        )
        .raw(&header(b"workspace/l", b'2', 0o777, 0, 0, b"x"), b"")
        .end();
    });
    let r = import(&a, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let id = r.json["snapshot_id"].as_str().unwrap();
    a.post(&format!("/v1/snapshots/{id}/restore"), Value::Null)
        .await;
    assert_eq!(a.sh("readlink workspace/l | wc -c").await.trim(), "4096");
}

/// One PAX record, `"<len> <key>=<value>\n"`, whose length counts itself.
fn pax(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while (len.to_string() + &body).len() != len {
        len += 1;
    }
    format!("{len}{body}")
}

#[test]
fn pax_records_count_themselves() {
    assert_eq!(pax("path", "abc"), "12 path=abc\n");
    assert_eq!(pax("p", &"x".repeat(95)).len(), 102);
}
