//! API keys: minting, verification, scopes, rotation and revocation.
//!
//! A key's plaintext is returned once, at creation or rotation; only
//! HMAC-SHA256(server secret, key) is stored, so a copy of the database alone cannot be used to
//! authenticate. Verified keys are cached in memory by hash; revocation removes the entry before
//! it returns, and an epoch counter stops a lookup that raced with a revocation from putting the
//! revoked key back.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use warren_storage::{Namespace, WorkspaceId};

use super::running::{RunGuard, Running};
use super::{Error, Result, event};
use crate::coord::{Change, Coordinator};
pub use crate::db::KeyRecord;
use crate::db::{MetaStore, NewKey, Scope};
use crate::event::Event;
use crate::ids::{KeyId, Micros};

/// Plaintext keys look like `trove-sk-<48 hex>`, the format trove-sdk users know.
const KEY_PREFIX: &str = "trove-sk-";
/// How much of the plaintext is kept in clear for display (`trove-sk-abc`).
const DISPLAY_PREFIX_LEN: usize = 12;
/// `last_used_at` is written at most this often per key, so authentication stays a read.
const TOUCH_INTERVAL_MICROS: i64 = 60 * 1_000_000;
/// Longest key name accepted.
const MAX_KEY_NAME: usize = 128;

/// An authenticated request's key.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key: Arc<KeyRecord>,
    /// The hash of the secret it presented, to tell later whether that secret still works.
    token_hash: [u8; 32],
}

impl Caller {
    /// An admin key, of whichever workspace.
    pub fn is_admin(&self) -> bool {
        self.key.scope == Scope::Admin
    }

    /// The hash of the secret this caller presented.
    pub(crate) fn token_hash(&self) -> &[u8; 32] {
        &self.token_hash
    }

    /// Checks that this key may manage `what` (keys, webhooks) in workspace `ws`.
    pub fn require_admin(&self, ws: &str, what: &str) -> Result<WorkspaceId> {
        let ws = self.require_workspace(ws)?;
        if self.key.scope != Scope::Admin {
            return Err(Error::Forbidden(format!(
                "Workspace keys cannot manage {what}."
            )));
        }
        Ok(ws)
    }

    /// Checks that `ws` (from a URL) is this key's workspace.
    pub fn require_workspace(&self, ws: &str) -> Result<WorkspaceId> {
        if ws != self.key.workspace.as_str() {
            return Err(Error::Forbidden(format!(
                "This key does not belong to workspace '{ws}'"
            )));
        }
        Ok(self.key.workspace.clone())
    }

    /// Resolves the namespace a runtime call (files, exec, snapshots) acts on, from the
    /// `X-Namespace` header and the key's scope.
    pub fn runtime_namespace(&self, header: Option<&str>) -> Result<Namespace> {
        if self.key.scope == Scope::Admin {
            return Err(Error::Forbidden(
                "Admin keys cannot access files or run commands; use a workspace key.".into(),
            ));
        }
        match (&self.key.namespace, header) {
            (Some(lock), None) => Ok(lock.clone()),
            (Some(lock), Some(h)) if h == lock.as_str() => Ok(lock.clone()),
            (Some(lock), Some(_)) => Err(Error::Forbidden(format!(
                "This key is scoped to namespace '{lock}'"
            ))),
            (None, Some(h)) => Ok(Namespace::parse(h)?),
            (None, None) => Err(Error::BadRequest(
                "X-Namespace header is required for keys not locked to a namespace".into(),
            )),
        }
    }
}

struct Cached {
    key: Arc<KeyRecord>,
    /// The hash as stored in the database.
    stored_hash: [u8; 32],
    last_touch: AtomicI64,
}

pub struct Keys {
    meta: Arc<dyn MetaStore>,
    secret: [u8; 32],
    cache: moka::sync::Cache<[u8; 32], Arc<Cached>>,
    /// Bumped under this lock by every revocation; see the module docs.
    epoch: Mutex<u64>,
    /// In-flight execs and streams, registered here so a revocation can end them.
    running: Arc<Running>,
    /// Where revocations are published; every process (this one first) acts on them.
    coord: Arc<dyn Coordinator>,
}

/// What a caller asks for when minting a key.
pub struct KeyRequest {
    pub name: String,
    pub namespace: Option<String>,
    pub admin: bool,
}

impl Keys {
    pub(crate) fn new(
        meta: Arc<dyn MetaStore>,
        secret: [u8; 32],
        running: Arc<Running>,
        coord: Arc<dyn Coordinator>,
    ) -> Self {
        Self {
            meta,
            running,
            coord,
            secret,
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                // Bounds how long a key revoked on another node stays usable here.
                .time_to_live(Duration::from_secs(300))
                .build(),
            epoch: Mutex::new(0),
        }
    }

    fn hash(&self, plaintext: &str) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC accepts any key length");
        mac.update(plaintext.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn generate() -> String {
        let mut bytes = [0u8; 24];
        rand::fill(&mut bytes);
        format!("{KEY_PREFIX}{}", hex::encode(bytes))
    }

    /// Resolves a bearer token to its key. Unknown, malformed and revoked keys are all 401.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Caller> {
        let token = bearer
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Unauthorized("Missing API key".into()))?;
        if !self.coord.current().await {
            return Err(Error::Busy(
                "this node cannot confirm it is current with the cluster; retry shortly".into(),
            ));
        }
        let hash = self.hash(token);
        let cached = match self.cache.get(&hash) {
            Some(c) => c,
            None => {
                let epoch = *self.epoch.lock().unwrap();
                let (record, stored_hash) = self
                    .meta
                    .key_by_hash(&hash)
                    .await?
                    .ok_or_else(|| Error::Unauthorized("Invalid API key".into()))?;
                let cached = Arc::new(Cached {
                    last_touch: AtomicI64::new(record.last_used_at.map_or(0, |m| m.0)),
                    key: Arc::new(record),
                    stored_hash,
                });
                let guard = self.epoch.lock().unwrap();
                if *guard == epoch {
                    self.cache.insert(hash, Arc::clone(&cached));
                }
                cached
            }
        };
        // Lookups are by hash (index and cache equality are not constant-time, but they compare
        // HMAC outputs an attacker cannot steer); the final word is a constant-time comparison
        // with the stored hash.
        if !bool::from(cached.stored_hash.ct_eq(&hash)) {
            return Err(Error::Unauthorized("Invalid API key".into()));
        }
        self.touch(&cached).await;
        Ok(Caller {
            key: Arc::clone(&cached.key),
            token_hash: hash,
        })
    }

    async fn touch(&self, cached: &Cached) {
        let now = Micros::now();
        let last = cached.last_touch.load(Ordering::Relaxed);
        if now.0 - last < TOUCH_INTERVAL_MICROS
            || cached
                .last_touch
                .compare_exchange(last, now.0, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Err(e) = self.meta.touch_key(&cached.key.id, now).await {
            tracing::warn!(key_id = %cached.key.id, error = %e, "could not record key use");
        }
    }

    /// Mints a key in `ws`. `caller` is `None` only for the server's own bootstrap.
    pub async fn mint(
        &self,
        caller: Option<&Caller>,
        ws: &WorkspaceId,
        req: KeyRequest,
    ) -> Result<(KeyRecord, String)> {
        let plaintext = Self::generate();
        let by = caller.map(|c| &c.key.id);
        let record = self.insert(by, ws, req, &plaintext, false).await?;
        Ok((record, plaintext))
    }

    /// Mints a key whose creation `by` (an admin key that approved a browser login, say)
    /// is credited with, though `by` is not the caller now.
    pub(crate) async fn mint_for(
        &self,
        by: &KeyId,
        ws: &WorkspaceId,
        req: KeyRequest,
    ) -> Result<(KeyRecord, String)> {
        let plaintext = Self::generate();
        let record = self.insert(Some(by), ws, req, &plaintext, false).await?;
        Ok((record, plaintext))
    }

    /// Whether `req` could be minted: its name and namespace, checked as minting checks them.
    pub(crate) fn check_request(req: &KeyRequest) -> Result<(String, Option<Namespace>, Scope)> {
        let name = req.name.trim();
        if name.is_empty() || name.chars().count() > MAX_KEY_NAME || name.contains(char::is_control)
        {
            return Err(Error::BadRequest(format!(
                "key name must be 1-{MAX_KEY_NAME} characters without control characters"
            )));
        }
        if req.admin && req.namespace.is_some() {
            return Err(Error::BadRequest(
                "an admin key cannot be locked to a namespace".into(),
            ));
        }
        let namespace = req.namespace.as_deref().map(Namespace::parse).transpose()?;
        let scope = if req.admin {
            Scope::Admin
        } else {
            Scope::Workspace
        };
        Ok((name.to_owned(), namespace, scope))
    }

    /// Installs the admin key the operator configured (`WARREN_ADMIN_KEY` or `admin.key`) and
    /// retires any earlier one: replacing the configured key is how an operator rotates it,
    /// so the replaced key must stop working, with a `key.revoked` event that says why.
    pub async fn install_bootstrap(
        &self,
        ws: &WorkspaceId,
        req: KeyRequest,
        plaintext: &str,
    ) -> Result<()> {
        if plaintext.len() < 16 {
            return Err(Error::BadRequest(
                "an operator-chosen key must be at least 16 characters".into(),
            ));
        }
        let hash = self.hash(plaintext);
        let current = match self.meta.key_by_hash(&hash).await? {
            Some((record, _)) => record.id,
            None => match self.insert(None, ws, req, plaintext, true).await {
                Ok(record) => record.id,
                // Servers sharing a database start together: another one installed the same
                // key between the lookup and the insert.
                Err(e) => match self.meta.key_by_hash(&hash).await? {
                    Some((record, _)) => record.id,
                    None => return Err(e),
                },
            },
        };
        for old in self.meta.list_keys(ws).await? {
            if old.bootstrap && old.id != current {
                tracing::warn!(key_id = %old.id, "retiring the admin key the configured one replaced");
                let retired = self
                    .revoke_as(
                        None,
                        ws,
                        &old.id,
                        Some("replaced by the configured admin key"),
                    )
                    .await;
                match retired {
                    // Another server starting at the same time retired it first.
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Stores a new key; its `key.created` event is credited to `by`.
    async fn insert(
        &self,
        by: Option<&KeyId>,
        ws: &WorkspaceId,
        req: KeyRequest,
        plaintext: &str,
        bootstrap: bool,
    ) -> Result<KeyRecord> {
        let (name, namespace, scope) = Self::check_request(&req)?;
        let record = KeyRecord {
            id: KeyId::random(),
            workspace: ws.clone(),
            name,
            prefix: plaintext.chars().take(DISPLAY_PREFIX_LEN).collect(),
            scope,
            namespace,
            created_at: Micros::now(),
            last_used_at: None,
            bootstrap,
        };
        let mut ev = event(
            None,
            ws,
            None,
            Event::KeyCreated {
                key_id: record.id.to_string(),
                name: record.name.clone(),
                scope: scope.as_str(),
                namespace: record.namespace.as_ref().map(|n| n.to_string()),
            },
        );
        ev.key_id = by.cloned();
        let new = NewKey {
            record,
            hash: self.hash(plaintext),
        };
        self.meta.insert_key(&new, &ev).await?;
        Ok(new.record)
    }

    pub async fn list(&self, ws: &WorkspaceId) -> Result<Vec<KeyRecord>> {
        Ok(self.meta.list_keys(ws).await?)
    }

    /// Revokes a key. When this returns, no request authenticated after it can use the key,
    /// and none of its execs is still running.
    pub async fn revoke(&self, caller: &Caller, ws: &WorkspaceId, id: &KeyId) -> Result<()> {
        self.revoke_as(Some(caller), ws, id, None).await
    }

    async fn revoke_as(
        &self,
        caller: Option<&Caller>,
        ws: &WorkspaceId,
        id: &KeyId,
        reason: Option<&'static str>,
    ) -> Result<()> {
        let ev = event(
            caller,
            ws,
            None,
            Event::KeyRevoked {
                key_id: id.to_string(),
                reason,
            },
        );
        self.meta
            .revoke_key(ws, id, &ev)
            .await?
            .ok_or_else(|| Error::NotFound(format!("Key not found: {id}")))?;
        self.coord
            .publish(Change::KeyRevoked { key: id.clone() })
            .await;
        Ok(())
    }

    /// Gives a key a new secret; the old one stops working at once. Id, name, scope and
    /// namespace stay the same, so audit history continues under the same key id.
    pub async fn rotate(
        &self,
        caller: &Caller,
        ws: &WorkspaceId,
        id: &KeyId,
    ) -> Result<(KeyRecord, String)> {
        let plaintext = Self::generate();
        let prefix: String = plaintext.chars().take(DISPLAY_PREFIX_LEN).collect();
        let ev = event(
            Some(caller),
            ws,
            None,
            Event::KeyRotated {
                key_id: id.to_string(),
            },
        );
        let (_, record) = self
            .meta
            .rotate_key(ws, id, &self.hash(&plaintext), &prefix, &ev)
            .await?
            .ok_or_else(|| Error::NotFound(format!("Key not found: {id}")))?;
        self.coord
            .publish(Change::KeyRevoked { key: id.clone() })
            .await;
        Ok((record, plaintext))
    }

    /// Registers a long-lived response (the event stream) under the caller's key, so that
    /// revoking or rotating the key ends it.
    pub async fn hold(&self, caller: &Caller) -> Result<RunGuard> {
        self.running.hold(self.meta.as_ref(), caller, None).await
    }

    /// Drops a key from the cache after its row was revoked or rotated (on a
    /// [`Change::KeyRevoked`], from this process or another). By id, since another process
    /// knows only that: the cache is walked, which revocations are rare enough to afford.
    pub(crate) fn forget(&self, key: &KeyId) {
        let mut epoch = self.epoch.lock().unwrap();
        *epoch += 1;
        for (hash, cached) in &self.cache {
            if &cached.key.id == key {
                self.cache.invalidate(&*hash);
            }
        }
    }
}
