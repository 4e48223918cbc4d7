//! Session tokens: who a connection is, across reconnects and instances.
//!
//! A token is `<user id>.<expiry, unix seconds>.<HMAC-SHA256, base64url>`,
//! signed with the secret every instance of a cluster shares, so any
//! instance can verify a token another one issued. It carries no name: the
//! name in `hello` wins. Owns signing and checking; not user storage (there
//! is none: a user is the id in a valid token).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused (answered `unauthorized`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("session token is malformed")]
    Malformed,
    #[error("session token signature is invalid")]
    BadSignature,
    #[error("session token has expired")]
    Expired,
}

/// Issues and verifies session tokens with one secret.
pub(crate) struct Sessions {
    key: Vec<u8>,
    ttl: Duration,
}

impl Sessions {
    pub(crate) fn new(secret: &[u8], ttl: Duration) -> Sessions {
        Sessions {
            key: secret.to_vec(),
            ttl,
        }
    }

    /// A fresh user id: `u_` and 22 base64url characters (128 random bits).
    pub(crate) fn new_user_id() -> String {
        format!("u_{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()))
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(payload.as_bytes());
        mac
    }

    /// A token for `user_id`, valid for the configured lifetime from `now`.
    pub(crate) fn issue(&self, user_id: &str, now: SystemTime) -> String {
        let expires = unix_secs(now) + self.ttl.as_secs();
        let payload = format!("{user_id}.{expires}");
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// The user id of a valid, unexpired token.
    pub(crate) fn verify(&self, token: &str, now: SystemTime) -> Result<String, TokenError> {
        let (payload, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (user_id, expires) = payload.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        if !user_id.starts_with("u_") || user_id.len() > 64 {
            return Err(TokenError::Malformed);
        }
        // Constant-time comparison through the MAC's own verifier.
        self.mac(payload)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        if unix_secs(now) >= expires {
            return Err(TokenError::Expired);
        }
        Ok(user_id.to_owned())
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(b"0123456789abcdef-test-secret", Duration::from_secs(60))
    }

    #[test]
    fn issued_token_verifies_to_its_user() {
        let s = sessions();
        let now = SystemTime::now();
        let id = Sessions::new_user_id();
        assert_eq!(s.verify(&s.issue(&id, now), now), Ok(id));
    }

    #[test]
    fn token_from_another_secret_is_refused() {
        let now = SystemTime::now();
        let other = Sessions::new(b"another-secret-of-16+", Duration::from_secs(60));
        let token = other.issue("u_abc", now);
        assert_eq!(
            sessions().verify(&token, now),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_user_id_is_refused() {
        let s = sessions();
        let now = SystemTime::now();
        let token = s.issue("u_alice", now).replacen("u_alice", "u_mallory", 1);
        assert_eq!(s.verify(&token, now), Err(TokenError::BadSignature));
    }

    #[test]
    fn token_expires_after_its_lifetime() {
        let s = sessions();
        let now = SystemTime::now();
        let token = s.issue("u_a", now);
        assert!(s.verify(&token, now + Duration::from_secs(59)).is_ok());
        assert_eq!(
            s.verify(&token, now + Duration::from_secs(61)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let s = sessions();
        let now = SystemTime::now();
        for bad in ["", "abc", "u_a.notanumber.AAAA", "u_a.123.!!!", "x.1.AAAA"] {
            assert_eq!(s.verify(bad, now), Err(TokenError::Malformed), "{bad}");
        }
    }
}
