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
    #[error("the session reached its maximum lifetime: sign in again")]
    TooOld,
}

/// A verified token: whose it is and when its session began (unix
/// seconds; renewals keep it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) user_id: String,
    pub(crate) since: u64,
}

/// Issues and verifies session tokens with one secret.
pub(crate) struct Sessions {
    key: Vec<u8>,
    ttl: Duration,
    /// How long a session may be renewed for, from its first token
    /// (`--session-max-lifetime-secs`): a stolen token cannot be renewed
    /// for ever.
    max_lifetime: Duration,
}

impl Sessions {
    pub(crate) fn new(secret: &[u8], ttl: Duration, max_lifetime: Duration) -> Sessions {
        Sessions {
            key: secret.to_vec(),
            ttl,
            max_lifetime,
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
    /// A token `<user id>.<expiry>.<since>.<mac>` (seconds since the epoch;
    /// HMAC-SHA256 of the rest, base64url): valid for the TTL from `now`,
    /// never past `since` + the maximum lifetime. `since`: when the session
    /// began (`None`: now, a new session).
    pub(crate) fn issue(&self, user_id: &str, now: SystemTime, since: Option<u64>) -> String {
        let now = unix_secs(now);
        let since = since.unwrap_or(now);
        let expires = (now + self.ttl.as_secs()).min(since + self.max_lifetime.as_secs());
        let payload = format!("{user_id}.{expires}.{since}");
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    /// Checks a token's signature and age. A token of the first format,
    /// `<user id>.<expiry>.<mac>`, is taken to have begun one TTL before
    /// its expiry. Errors: malformed, a bad signature, expired, or past the
    /// session's maximum lifetime.
    pub(crate) fn verify(&self, token: &str, now: SystemTime) -> Result<Session, TokenError> {
        let (payload, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let number = |s: &str| s.parse::<u64>().map_err(|_| TokenError::Malformed);
        let (user_id, expires, since) = match payload.split('.').collect::<Vec<_>>()[..] {
            [user_id, expires] => {
                let expires = number(expires)?;
                (user_id, expires, expires.saturating_sub(self.ttl.as_secs()))
            }
            [user_id, expires, since] => (user_id, number(expires)?, number(since)?),
            _ => return Err(TokenError::Malformed),
        };
        if !user_id.starts_with("u_") || user_id.len() > 64 {
            return Err(TokenError::Malformed);
        }
        self.mac(payload)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let now = unix_secs(now);
        if now >= since.saturating_add(self.max_lifetime.as_secs()) {
            return Err(TokenError::TooOld);
        }
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Ok(Session {
            user_id: user_id.to_owned(),
            since,
        })
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(
            b"0123456789abcdef-test-secret",
            Duration::from_secs(60),
            Duration::from_secs(300),
        )
    }

    #[test]
    fn issued_token_verifies_to_its_user() {
        let s = sessions();
        let now = SystemTime::now();
        let id = Sessions::new_user_id();
        let session = s.verify(&s.issue(&id, now, None), now).unwrap();
        assert_eq!((session.user_id, session.since), (id, unix_secs(now)));
    }

    #[test]
    fn token_from_another_secret_is_refused() {
        let now = SystemTime::now();
        let other = Sessions::new(
            b"another-secret-of-16+",
            Duration::from_secs(60),
            Duration::from_secs(300),
        );
        let token = other.issue("u_abc", now, None);
        assert_eq!(
            sessions().verify(&token, now),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_fields_are_refused() {
        let s = sessions();
        let now = SystemTime::now();
        let token = s.issue("u_alice", now, None);
        let user = token.replacen("u_alice", "u_mallory", 1);
        assert_eq!(s.verify(&user, now), Err(TokenError::BadSignature));
        // A later `since` would buy a renewal past the maximum lifetime.
        let parts: Vec<&str> = token.split('.').collect();
        let later = format!(
            "{}.{}.{}.{}",
            parts[0],
            parts[1],
            unix_secs(now) + 1000,
            parts[3]
        );
        assert_eq!(s.verify(&later, now), Err(TokenError::BadSignature));
    }

    #[test]
    fn token_expires_after_its_lifetime() {
        let s = sessions();
        let now = SystemTime::now();
        let token = s.issue("u_a", now, None);
        assert!(s.verify(&token, now + Duration::from_secs(59)).is_ok());
        assert_eq!(
            s.verify(&token, now + Duration::from_secs(61)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn renewals_keep_the_session_start_and_end_at_the_maximum_lifetime() {
        // TTL 60 s, maximum lifetime 300 s: a client that renews every
        // 50 s keeps its session for 300 s, then must sign in again.
        let s = sessions();
        let start = SystemTime::now();
        let mut token = s.issue("u_a", start, None);
        let mut at = start;
        loop {
            at += Duration::from_secs(50);
            match s.verify(&token, at) {
                Ok(session) => {
                    assert_eq!(session.since, unix_secs(start), "renewals keep the start");
                    token = s.issue(&session.user_id, at, Some(session.since));
                }
                Err(e) => {
                    assert_eq!(e, TokenError::TooOld);
                    break;
                }
            }
        }
        let lived = at.duration_since(start).unwrap().as_secs();
        assert!((300..=350).contains(&lived), "the session lived {lived} s");
        // The last token it was given expired at the maximum, not a TTL later.
        let last_expiry: u64 = token.split('.').nth(1).unwrap().parse().unwrap();
        assert!(last_expiry <= unix_secs(start) + 300);
    }

    #[test]
    fn a_token_of_the_first_format_still_verifies_and_its_session_began_a_ttl_before_its_expiry() {
        let s = sessions();
        let now = SystemTime::now();
        let expires = unix_secs(now) + 30;
        let payload = format!("u_old.{expires}");
        let tag = URL_SAFE_NO_PAD.encode(s.mac(&payload).finalize().into_bytes());
        let session = s.verify(&format!("{payload}.{tag}"), now).unwrap();
        assert_eq!(
            (session.user_id.as_str(), session.since),
            ("u_old", expires - 60)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let s = sessions();
        let now = SystemTime::now();
        for bad in [
            "",
            "abc",
            "u_a.notanumber.AAAA",
            "u_a.123.!!!",
            "x.1.AAAA",
            "u_a.1.2.3.AAAA",
            "u_a.1.x.AAAA",
        ] {
            assert_eq!(s.verify(bad, now), Err(TokenError::Malformed), "{bad}");
        }
    }
}
