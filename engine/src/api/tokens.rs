//! API tokens: 256 random bits, shown once, kept only as a SHA-256 hash,
//! scoped to tenants and a role, with an optional expiry; revocable.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;

use crate::store::{Store, StoreError, TokenRecord};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Reader,
    PluginPublisher,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reader" => Some(Role::Reader),
            "plugin-publisher" => Some(Role::PluginPublisher),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Reading the directory, events and runs.
    pub fn can_read(self) -> bool {
        matches!(self, Role::Reader | Role::Operator | Role::Admin)
    }

    pub fn may(self, need: Need) -> bool {
        match need {
            Need::Read => self.can_read(),
            Need::Operate => matches!(self, Role::Operator | Role::Admin),
            Need::Publish => matches!(self, Role::PluginPublisher | Role::Admin),
            Need::Admin => self == Role::Admin,
        }
    }
}

/// What a route asks of the caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// reader, operator, admin: the directory, events, runs, plans, quarantine, plugins.
    Read,
    /// operator, admin: start syncs, approve blocked plans, resolve quarantine.
    Operate,
    /// plugin-publisher, admin: upload, activate and roll back plugins.
    Publish,
    /// admin: tokens and the audit trail.
    Admin,
}

impl Need {
    pub fn roles(self) -> &'static str {
        match self {
            Need::Read => "reader, operator, admin",
            Need::Operate => "operator, admin",
            Need::Publish => "plugin-publisher, admin",
            Need::Admin => "admin",
        }
    }
}

pub const PREFIX: &str = "rst_";

pub fn hash(secret: &str) -> String {
    crate::util::sha256_hex(secret.as_bytes())
}

/// Creates a token; returns its record and the secret, which is not stored.
pub fn create(
    store: &mut dyn Store,
    name: &str,
    tenants: &[String],
    role: Role,
    expires_at: Option<String>,
) -> Result<(TokenRecord, String), StoreError> {
    let rng = ring::rand::SystemRandom::new();
    let mut secret = [0u8; 32];
    let mut id = [0u8; 6];
    rng.fill(&mut secret).map_err(|_| StoreError::Corrupt("no randomness for a token".into()))?;
    rng.fill(&mut id).map_err(|_| StoreError::Corrupt("no randomness for a token".into()))?;
    let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let record = TokenRecord {
        id: format!("tok_{}", hex::encode(id)),
        name: name.to_string(),
        tenants: tenants.to_vec(),
        role: match role {
            Role::Reader => "reader",
            Role::PluginPublisher => "plugin-publisher",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
        .into(),
        created_at: crate::util::now_rfc3339(),
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    store.add_token(&record, &hash(&secret))?;
    Ok((record, secret))
}

/// The token's record if it is live (known, not revoked, not expired).
pub fn check(store: &mut dyn Store, secret: &str) -> Result<Option<(TokenRecord, Role)>, StoreError> {
    let Some(t) = store.token_by_hash(&hash(secret))? else { return Ok(None) };
    if let Some(exp) = &t.expires_at {
        if *exp <= crate::util::now_rfc3339() {
            return Ok(None);
        }
    }
    let Some(role) = Role::parse(&t.role) else { return Ok(None) };
    Ok(Some((t, role)))
}
