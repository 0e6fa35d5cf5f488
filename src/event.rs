//! The kinds of event Warren records, each with its typed payload, and the one place they are
//! turned into the `type` string and `data` JSON that the events feed, the live stream and
//! webhook bodies carry.
//!
//! `data` is serialized through a `serde_json::Value`, whose object keys are sorted: that is
//! the byte form stored since the first event, which webhook receivers have verified
//! signatures over, so it stays.

use serde::Serialize;

/// Every kind of event, by its wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    FileWritten,
    FileDeleted,
    ExecCompleted,
    SnapshotCreated,
    SnapshotDeleted,
    SnapshotRestored,
    NamespaceDeleted,
    NamespaceRestored,
    NamespacePurged,
    NamespaceReindexed,
    KeyCreated,
    KeyRevoked,
    KeyRotated,
    WebhookCreated,
    WebhookDeleted,
    WebhookTest,
}

impl EventKind {
    pub const ALL: [EventKind; 16] = [
        Self::FileWritten,
        Self::FileDeleted,
        Self::ExecCompleted,
        Self::SnapshotCreated,
        Self::SnapshotDeleted,
        Self::SnapshotRestored,
        Self::NamespaceDeleted,
        Self::NamespaceRestored,
        Self::NamespacePurged,
        Self::NamespaceReindexed,
        Self::KeyCreated,
        Self::KeyRevoked,
        Self::KeyRotated,
        Self::WebhookCreated,
        Self::WebhookDeleted,
        Self::WebhookTest,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FileWritten => "file.written",
            Self::FileDeleted => "file.deleted",
            Self::ExecCompleted => "exec.completed",
            Self::SnapshotCreated => "snapshot.created",
            Self::SnapshotDeleted => "snapshot.deleted",
            Self::SnapshotRestored => "snapshot.restored",
            Self::NamespaceDeleted => "namespace.deleted",
            Self::NamespaceRestored => "namespace.restored",
            Self::NamespacePurged => "namespace.purged",
            Self::NamespaceReindexed => "namespace.reindexed",
            Self::KeyCreated => "key.created",
            Self::KeyRevoked => "key.revoked",
            Self::KeyRotated => "key.rotated",
            Self::WebhookCreated => "webhook.created",
            Self::WebhookDeleted => "webhook.deleted",
            Self::WebhookTest => "webhook.test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What wrote a file: an HTTP call or an exec's sync-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteSource {
    Write,
    Upload,
    Exec,
}

/// One event's payload. Field names are the wire's `data` keys.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Event {
    FileWritten {
        path: String,
        size_bytes: u64,
        source: WriteSource,
    },
    FileDeleted {
        path: String,
    },
    ExecCompleted {
        command: String,
        exit_code: i32,
        duration_ms: u64,
        /// The start of stdout, cut to a bounded number of characters.
        stdout: String,
        stdin_bytes: usize,
        timed_out: bool,
    },
    SnapshotCreated {
        snapshot_id: String,
        label: Option<String>,
        size_bytes: u64,
        file_count: u64,
        /// Present (and true) only for an uploaded archive.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        imported: bool,
    },
    SnapshotDeleted {
        snapshot_id: String,
        /// Present only when the retention sweep removed it.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    SnapshotRestored {
        snapshot_id: String,
        files_restored: u64,
    },
    NamespaceDeleted {
        namespace: String,
    },
    NamespaceRestored {
        namespace: String,
    },
    /// The proof of a purge.
    NamespacePurged {
        namespace: String,
        objects: u64,
        bytes: u64,
        snapshots: u64,
        deleted_at: String,
    },
    NamespaceReindexed {
        namespace: String,
        files: u64,
        bytes: u64,
        skipped: usize,
    },
    KeyCreated {
        key_id: String,
        name: String,
        scope: &'static str,
        namespace: Option<String>,
    },
    KeyRevoked {
        key_id: String,
        /// Present when the revocation was not a direct request (a namespace deletion, a
        /// replaced admin key).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
    KeyRotated {
        key_id: String,
    },
    WebhookCreated {
        webhook_id: String,
        url: String,
        events: Vec<String>,
        namespace: Option<String>,
    },
    WebhookDeleted {
        webhook_id: String,
    },
    WebhookTest {
        message: &'static str,
        webhook_id: String,
    },
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::FileWritten { .. } => EventKind::FileWritten,
            Self::FileDeleted { .. } => EventKind::FileDeleted,
            Self::ExecCompleted { .. } => EventKind::ExecCompleted,
            Self::SnapshotCreated { .. } => EventKind::SnapshotCreated,
            Self::SnapshotDeleted { .. } => EventKind::SnapshotDeleted,
            Self::SnapshotRestored { .. } => EventKind::SnapshotRestored,
            Self::NamespaceDeleted { .. } => EventKind::NamespaceDeleted,
            Self::NamespaceRestored { .. } => EventKind::NamespaceRestored,
            Self::NamespacePurged { .. } => EventKind::NamespacePurged,
            Self::NamespaceReindexed { .. } => EventKind::NamespaceReindexed,
            Self::KeyCreated { .. } => EventKind::KeyCreated,
            Self::KeyRevoked { .. } => EventKind::KeyRevoked,
            Self::KeyRotated { .. } => EventKind::KeyRotated,
            Self::WebhookCreated { .. } => EventKind::WebhookCreated,
            Self::WebhookDeleted { .. } => EventKind::WebhookDeleted,
            Self::WebhookTest { .. } => EventKind::WebhookTest,
        }
    }

    /// The `data` object as stored and sent.
    pub fn data_json(&self) -> String {
        serde_json::to_value(self)
            .expect("event payloads are plain data")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert!(seen.insert(k.as_str()));
        }
        assert_eq!(EventKind::parse("file.*"), None);
    }

    /// The stored bytes are what `json!` made before payloads were typed: sorted keys,
    /// optional fields absent rather than null where they always were.
    #[test]
    fn data_keeps_its_byte_form() {
        let ev = Event::FileWritten {
            path: "workspace/a.txt".into(),
            size_bytes: 3,
            source: WriteSource::Exec,
        };
        assert_eq!(
            ev.data_json(),
            r#"{"path":"workspace/a.txt","size_bytes":3,"source":"exec"}"#
        );
        let ev = Event::KeyRevoked {
            key_id: "key-1".into(),
            reason: None,
        };
        assert_eq!(ev.data_json(), r#"{"key_id":"key-1"}"#);
        let ev = Event::SnapshotCreated {
            snapshot_id: "snap-1".into(),
            label: None,
            size_bytes: 10,
            file_count: 1,
            imported: false,
        };
        assert_eq!(
            ev.data_json(),
            r#"{"file_count":1,"label":null,"size_bytes":10,"snapshot_id":"snap-1"}"#
        );
        let ev = Event::KeyCreated {
            key_id: "key-1".into(),
            name: "n".into(),
            scope: "workspace",
            namespace: None,
        };
        assert_eq!(
            ev.data_json(),
            r#"{"key_id":"key-1","name":"n","namespace":null,"scope":"workspace"}"#
        );
    }
}
