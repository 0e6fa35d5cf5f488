//! Browser login for the CLI (spec §5.2), the device-code flow: the CLI starts a login and
//! polls it; an operator approves its short user code (choosing the namespace and key name)
//! or denies it; the CLI's next poll receives the new key, once.
//!
//! Nothing an attacker could use is stored: both codes are kept as HMACs under the server
//! secret, and an approval records only what to mint; the key is minted by the poll that
//! takes the approval (credited to the admin key that approved, as `POST …/keys` would be),
//! so its plaintext exists only in that one answer. A user code carries about 30 bits (four
//! of twenty letters, four digits) and lives ten minutes, and an admin key that names ten
//! unknown codes is refused for a while, so codes cannot be guessed through approval.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use warren_storage::WorkspaceId;

use super::auth::{Caller, KeyRequest, Keys};
use super::{Error, Result};
use crate::db::{ApprovedLogin, DeviceDecision, DevicePoll, MetaStore, NewDeviceLogin};
use crate::ids::{KeyId, Micros};

/// Twenty letters, none of which reads as a digit or as another letter (no I, L, O, S, U, Z).
const LETTERS: &[u8; 20] = b"ABCDEFGHJKMNPQRTVWXY";
/// Unknown user codes an admin key may name before its approvals are refused for a while.
const MAX_UNKNOWN_CODES: u32 = 10;
/// How long a key that named too many unknown codes waits.
const LOCKOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct DeviceSettings {
    /// How long a login may wait for its approval (the CLI's deadline too).
    pub ttl: Duration,
    /// How often the CLI is told to poll.
    pub interval: Duration,
    /// Pending logins at most, across the cluster: starts are unauthenticated.
    pub max_pending: u64,
    /// The base URL the approval page is linked from (`https://warren.example.com`).
    pub public_url: String,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(600),
            interval: Duration::from_secs(2),
            max_pending: 10_000,
            public_url: "http://127.0.0.1:8080".into(),
        }
    }
}

/// A login just started, as the CLI is told.
#[derive(Debug, Clone)]
pub struct Started {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub interval: Duration,
    pub expires_in: Duration,
}

/// What a poll tells the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    Pending,
    Approved {
        api_key: String,
        workspace_id: String,
    },
    Denied,
    Expired,
}

pub struct DeviceFlow {
    meta: Arc<dyn MetaStore>,
    keys: Arc<Keys>,
    secret: [u8; 32],
    settings: DeviceSettings,
    /// Unknown codes named per admin key, forgotten after [`LOCKOUT`].
    unknown: moka::sync::Cache<String, Arc<AtomicU32>>,
}

impl DeviceFlow {
    pub(crate) fn new(
        meta: Arc<dyn MetaStore>,
        keys: Arc<Keys>,
        secret: [u8; 32],
        settings: DeviceSettings,
    ) -> Self {
        Self {
            meta,
            keys,
            secret,
            settings,
            unknown: moka::sync::Cache::builder()
                .time_to_live(LOCKOUT)
                .max_capacity(100_000)
                .build(),
        }
    }

    pub async fn start(&self) -> Result<Started> {
        let now = Micros::now();
        if self.meta.count_pending_device_logins(now).await? >= self.settings.max_pending {
            return Err(Error::TooManyRequests(
                "Too many logins are waiting for approval; try again later".into(),
            ));
        }
        let expires_at = Micros(now.0 + self.settings.ttl.as_micros() as i64);
        // A collision of either code is astronomically rare for device codes and merely rare
        // for user codes among thousands pending: draw again.
        for _ in 0..8 {
            let device_code = hex::encode(rand::random::<[u8; 32]>());
            let user_code = new_user_code();
            let login = NewDeviceLogin {
                device_hash: self.hash("device", &device_code),
                user_hash: self.hash("user", &normalize(&user_code).expect("made well-formed")),
                created_at: now,
                expires_at,
            };
            if self.meta.insert_device_login(&login).await? {
                let base = self.settings.public_url.trim_end_matches('/');
                let verification_uri = format!("{base}/console/device");
                return Ok(Started {
                    verification_uri_complete: format!("{verification_uri}?code={user_code}"),
                    verification_uri,
                    device_code,
                    user_code,
                    interval: self.settings.interval,
                    expires_in: self.settings.ttl,
                });
            }
        }
        Err(Error::Internal(
            "could not draw an unused login code".into(),
        ))
    }

    pub async fn poll(&self, device_code: &str) -> Result<Poll> {
        let found = self
            .meta
            .poll_device_login(&self.hash("device", device_code), Micros::now())
            .await?;
        Ok(match found {
            DevicePoll::Pending => Poll::Pending,
            DevicePoll::Denied => Poll::Denied,
            DevicePoll::Expired => Poll::Expired,
            DevicePoll::Approved(a) => {
                let ws = WorkspaceId::parse(&a.workspace)
                    .map_err(|e| Error::Internal(format!("a stored login's workspace: {e}")))?;
                let req = KeyRequest {
                    name: a.key_name,
                    namespace: a.namespace,
                    admin: false,
                };
                let by = KeyId::from_string(a.approved_by);
                let (_, api_key) = self.keys.mint_for(&by, &ws, req).await?;
                Poll::Approved {
                    api_key,
                    workspace_id: ws.as_str().to_owned(),
                }
            }
        })
    }

    /// Approves the pending login of `user_code`: the CLI's next poll receives a key named
    /// `name`, locked to `namespace` when one is given (new or existing), credited to
    /// `caller`.
    pub async fn approve(
        &self,
        caller: &Caller,
        ws: &str,
        user_code: &str,
        namespace: Option<String>,
        name: String,
    ) -> Result<()> {
        let ws = caller.require_admin(ws, "logins")?;
        let req = KeyRequest {
            name,
            namespace,
            admin: false,
        };
        // Checked now, so that what was approved can be minted when the CLI comes for it.
        let (name, namespace, _) = Keys::check_request(&req)?;
        let user_hash = self.pending(caller, user_code).await?;
        let decision = DeviceDecision::Approve(ApprovedLogin {
            workspace: ws.as_str().to_owned(),
            namespace: namespace.map(|n| n.as_str().to_owned()),
            key_name: name,
            approved_by: caller.key.id.as_str().to_owned(),
        });
        self.decide(&user_hash, &decision).await
    }

    pub async fn deny(&self, caller: &Caller, ws: &str, user_code: &str) -> Result<()> {
        caller.require_admin(ws, "logins")?;
        let user_hash = self.pending(caller, user_code).await?;
        self.decide(&user_hash, &DeviceDecision::Deny).await
    }

    async fn decide(&self, user_hash: &[u8; 32], decision: &DeviceDecision) -> Result<()> {
        let decided = self
            .meta
            .decide_device_login(user_hash, decision, Micros::now())
            .await?;
        if !decided {
            // It expired, or another operator decided it, since it was looked up.
            return Err(Error::NotFound("No pending login has this code".into()));
        }
        Ok(())
    }

    /// The stored hash of a pending login's user code, counting the caller's misses.
    async fn pending(&self, caller: &Caller, user_code: &str) -> Result<[u8; 32]> {
        let misses = self
            .unknown
            .get_with(caller.key.id.as_str().to_owned(), Default::default);
        if misses.load(Ordering::Relaxed) >= MAX_UNKNOWN_CODES {
            return Err(Error::TooManyRequests(
                "Too many unknown login codes from this key; wait ten minutes".into(),
            ));
        }
        let code = normalize(user_code).ok_or_else(|| {
            Error::Unprocessable(format!("{user_code:?} is not a login code (ABCD-1234)"))
        })?;
        let user_hash = self.hash("user", &code);
        if self
            .meta
            .pending_device_login(&user_hash, Micros::now())
            .await?
            .is_none()
        {
            misses.fetch_add(1, Ordering::Relaxed);
            return Err(Error::NotFound("No pending login has this code".into()));
        }
        Ok(user_hash)
    }

    fn hash(&self, what: &str, code: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        mac.update(b"warren device login\0");
        mac.update(what.as_bytes());
        mac.update(b"\0");
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// `ABCD-1234`: four unambiguous letters and four digits.
fn new_user_code() -> String {
    let bytes: [u8; 8] = rand::random();
    let letters: String = bytes[..4]
        .iter()
        .map(|b| LETTERS[*b as usize % LETTERS.len()] as char)
        .collect();
    let digits: String = bytes[4..]
        .iter()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    format!("{letters}-{digits}")
}

/// A user code as typed (any case, with or without its dash or spaces) in its one stored
/// form, or `None` if it cannot be one.
fn normalize(code: &str) -> Option<String> {
    let bare: String = code
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let ok = bare.len() == 8
        && bare.bytes().take(4).all(|b| LETTERS.contains(&b))
        && bare.bytes().skip(4).all(|b| b.is_ascii_digit());
    ok.then_some(bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_well_formed_and_read_back_however_typed() {
        for _ in 0..1000 {
            let code = new_user_code();
            assert_eq!(code.len(), 9, "{code}");
            let bare = normalize(&code).expect(&code);
            assert_eq!(normalize(&code.to_lowercase()), Some(bare.clone()));
            assert_eq!(normalize(&code.replace('-', " ")), Some(bare));
        }
        for bad in [
            "",
            "ABCD-123",
            "ABCD-12345",
            "ABID-1234",
            "1234-ABCD",
            "ABCD-12E4",
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }
}
