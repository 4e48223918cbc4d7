//! Identity from the host app (PROTOCOL.md "Host identity"): a `hello`
//! whose `token` is a JWT the host app issued signs in as its `sub`, with
//! its `name` claim as the display name, until its `exp`; its `rooms` claim
//! lists the private rooms (`--private-rooms`) it may join. Signed HS256
//! with `--jwt-secret`, or RS256/RS384/RS512/ES256/ES384/EdDSA with a key
//! of `--jwks-url` (an http(s) URL or a file; cached by `kid`, read again
//! when a token names a `kid` it does not hold, at most every
//! [`JWKS_MIN_REFETCH`]). `aud` and `iss` are checked when configured.
//! Verification is the jsonwebtoken crate's: the algorithm comes from the
//! key, never from the token alone (`alg: none` and an HMAC token against
//! a public key are refused).

use crate::config::{glob_match, IdentityConfig};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The shortest time between two reads of the JWKS (a token with an
/// unknown `kid` cannot make the server fetch it more often).
pub(crate) const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);

/// Why a host token was refused (the `message` of the `unauthorized`
/// error; never the token itself).
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityError {
    #[error("the token is not a valid JWT: {0}")]
    Invalid(String),
    #[error("the token's key id {0:?} is not in the key set")]
    UnknownKey(Option<String>),
    #[error("the key set cannot be read: {0}")]
    Jwks(String),
    #[error("the token's name claim is not a valid name: {0}")]
    BadName(String),
}

/// The claims a host token carries.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    name: Option<String>,
    /// Private rooms (patterns with `*`) the user may join.
    #[serde(default)]
    rooms: Vec<String>,
}

/// A session signed in with a host token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostSession {
    /// `sub`.
    pub(crate) user_id: String,
    /// `name`, when the token has one.
    pub(crate) name: Option<String>,
    /// `exp`.
    pub(crate) expires: SystemTime,
    /// `rooms`: the private rooms (patterns) it may join.
    pub(crate) rooms: Vec<String>,
}

/// The host app's keys and rules; one per instance.
pub(crate) struct Identity {
    config: IdentityConfig,
    secret: Option<DecodingKey>,
    jwks: Option<Jwks>,
}

/// Keys by `kid` (a key without one under ""), with the algorithm the key
/// names, if it names one.
type KeySet = HashMap<String, (DecodingKey, Option<Algorithm>)>;

struct Jwks {
    source: String,
    client: reqwest::Client,
    /// The keys read last: every token's lookup, under a lock never held
    /// across an await.
    keys: std::sync::RwLock<KeySet>,
    /// When the set was read last. Held across the read itself, so that
    /// tokens naming an unknown `kid` at once cause one read, not one each.
    fetched: tokio::sync::Mutex<Option<Instant>>,
}

impl Identity {
    pub(crate) fn new(config: IdentityConfig) -> Identity {
        let secret = config.secret.as_deref().map(|s| {
            DecodingKey::from_secret(s.as_bytes())
                .expect("a secret of 16 or more characters (checked in config) is an HMAC key")
        });
        let jwks = config.jwks.clone().map(|source| Jwks {
            source,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client with the process's TLS provider"),
            keys: std::sync::RwLock::default(),
            fetched: tokio::sync::Mutex::default(),
        });
        Identity {
            config,
            secret,
            jwks,
        }
    }

    /// Whether host tokens are accepted at all.
    pub(crate) fn configured(&self) -> bool {
        self.secret.is_some() || self.jwks.is_some()
    }

    /// Whether a `hello` may come without a host token.
    pub(crate) fn allows_guests(&self) -> bool {
        self.config.allow_guests
    }

    /// Whether `token` has the shape of a JWT (three base64url parts, the
    /// first a JSON header), as opposed to a session token of ours.
    pub(crate) fn looks_like_jwt(token: &str) -> bool {
        // A JSON header in base64url starts `eyJ` (`{"`); ours start `u_`.
        token.starts_with("eyJ") && token.split('.').count() == 3
    }

    /// Whether `room` is private (`--private-rooms`).
    pub(crate) fn is_private(&self, room: &str) -> bool {
        self.config
            .private_rooms
            .iter()
            .any(|p| glob_match(p, room))
    }

    /// Whether a session may join `room`: any room that is not private; a
    /// private one only when `rooms` (the session's claim; none for a
    /// guest) lists it.
    pub(crate) fn may_join(&self, room: &str, rooms: Option<&[String]>) -> bool {
        !self.is_private(room)
            || rooms.is_some_and(|rooms| rooms.iter().any(|p| glob_match(p, room)))
    }

    /// Verifies a host token (its `exp` against the clock now).
    pub(crate) async fn verify(&self, token: &str) -> Result<HostSession, IdentityError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        let (key, alg) = match header.alg {
            Algorithm::HS256 => match &self.secret {
                Some(key) => (key.clone(), Algorithm::HS256),
                None => {
                    return Err(IdentityError::Invalid(
                        "HS256 tokens are not accepted here (no --jwt-secret)".into(),
                    ))
                }
            },
            Algorithm::HS384 | Algorithm::HS512 => {
                return Err(IdentityError::Invalid(format!(
                    "{:?} is not accepted (HS256 with --jwt-secret only)",
                    header.alg
                )))
            }
            alg => {
                let Some(jwks) = &self.jwks else {
                    return Err(IdentityError::Invalid(format!(
                        "{alg:?} tokens are not accepted here (no --jwks-url)"
                    )));
                };
                let (key, key_alg) = jwks.key(header.kid.as_deref()).await?;
                if key_alg.is_some_and(|k| k != alg) {
                    return Err(IdentityError::Invalid(format!(
                        "the token says {alg:?}, its key is for {key_alg:?}"
                    )));
                }
                (key, alg)
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.config.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| IdentityError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > 128 {
            return Err(IdentityError::Invalid(
                "the sub claim must be 1–128 characters".into(),
            ));
        }
        if let Some(name) = &claims.name {
            protocol::Name::parse(name).map_err(|e| IdentityError::BadName(e.to_string()))?;
        }
        Ok(HostSession {
            user_id: claims.sub,
            name: claims.name,
            expires: UNIX_EPOCH + Duration::from_secs(claims.exp),
            rooms: claims.rooms,
        })
    }
}

impl Jwks {
    /// The key named `kid` (the only key when the token names none),
    /// reading the set again when it is not there and the last read is
    /// older than [`JWKS_MIN_REFETCH`].
    async fn key(
        &self,
        kid: Option<&str>,
    ) -> Result<(DecodingKey, Option<Algorithm>), IdentityError> {
        let unknown = || IdentityError::UnknownKey(kid.map(str::to_owned));
        if let Some(found) = self.pick(kid) {
            return Ok(found);
        }
        let mut fetched = self.fetched.lock().await;
        // Another token may have read the set while this one waited.
        if let Some(found) = self.pick(kid) {
            return Ok(found);
        }
        if fetched.is_some_and(|at| at.elapsed() < JWKS_MIN_REFETCH) {
            return Err(unknown());
        }
        *fetched = Some(Instant::now());
        let keys = self.fetch().await?;
        *self.keys.write().expect("jwks lock") = keys;
        self.pick(kid).ok_or_else(unknown)
    }

    fn pick(&self, kid: Option<&str>) -> Option<(DecodingKey, Option<Algorithm>)> {
        let keys = self.keys.read().expect("jwks lock");
        match kid {
            Some(kid) => keys.get(kid).cloned(),
            None if keys.len() == 1 => keys.values().next().cloned(),
            None => None,
        }
    }

    /// Reads and parses the set; keys it cannot use are skipped (logged).
    async fn fetch(&self) -> Result<KeySet, IdentityError> {
        let text = if self.source.starts_with("http://") || self.source.starts_with("https://") {
            let response = self
                .client
                .get(&self.source)
                .send()
                .await
                .map_err(|e| IdentityError::Jwks(format!("{}: {e}", self.source)))?;
            if !response.status().is_success() {
                return Err(IdentityError::Jwks(format!(
                    "{} answered {}",
                    self.source,
                    response.status()
                )));
            }
            response
                .text()
                .await
                .map_err(|e| IdentityError::Jwks(format!("{}: {e}", self.source)))?
        } else {
            tokio::fs::read_to_string(&self.source)
                .await
                .map_err(|e| IdentityError::Jwks(format!("{}: {e}", self.source)))?
        };
        let set: JwkSet = serde_json::from_str(&text)
            .map_err(|e| IdentityError::Jwks(format!("{}: not a JWK set: {e}", self.source)))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    let alg = jwk
                        .common
                        .key_algorithm
                        .and_then(|a| a.to_string().parse::<Algorithm>().ok());
                    keys.insert(jwk.common.key_id.clone().unwrap_or_default(), (key, alg));
                }
                Err(e) => {
                    tracing::warn!(kid = ?jwk.common.key_id, error = %e, "a JWKS key is skipped")
                }
            }
        }
        tracing::info!(keys = keys.len(), source = %self.source, "JWKS read");
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn hs256(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).expect("key"),
        )
        .expect("encode")
    }

    fn identity() -> Identity {
        Identity::new(IdentityConfig {
            secret: Some("host-secret-0123456789".into()),
            private_rooms: vec!["team-*".into(), "dm-*".into()],
            allow_guests: true,
            ..IdentityConfig::default()
        })
    }

    fn unix_secs(now: SystemTime) -> u64 {
        now.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn in_an_hour() -> u64 {
        unix_secs(SystemTime::now()) + 3600
    }

    #[tokio::test]
    async fn a_valid_hs256_token_signs_in_as_its_sub() {
        let token = hs256(
            "host-secret-0123456789",
            serde_json::json!({"sub": "alice", "name": "Alice", "exp": in_an_hour(), "rooms": ["team-a"]}),
        );
        assert!(Identity::looks_like_jwt(&token));
        let s = identity().verify(&token).await.expect("valid");
        assert_eq!(
            (s.user_id.as_str(), s.name.as_deref()),
            ("alice", Some("Alice"))
        );
        assert_eq!(s.rooms, ["team-a"]);
    }

    #[tokio::test]
    async fn expired_wrong_key_and_unsigned_tokens_are_refused() {
        let id = identity();
        let past = unix_secs(SystemTime::now()) - 10;
        for token in [
            hs256(
                "host-secret-0123456789",
                serde_json::json!({"sub": "a", "exp": past}),
            ),
            hs256(
                "another-secret-0123456",
                serde_json::json!({"sub": "a", "exp": in_an_hour()}),
            ),
            hs256(
                "host-secret-0123456789",
                serde_json::json!({"exp": in_an_hour()}),
            ),
        ] {
            assert!(id.verify(&token).await.is_err(), "{token}");
        }
        // alg: none, by hand.
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(format!(r#"{{"sub":"a","exp":{}}}"#, in_an_hour()))
        );
        assert!(id.verify(&none).await.is_err());
    }

    #[test]
    fn private_rooms_need_a_rooms_claim_that_lists_them() {
        let id = identity();
        assert!(id.may_join("general", None));
        assert!(!id.may_join("team-a", None), "a guest");
        assert!(!id.may_join("team-a", Some(&["team-b".to_owned()])));
        assert!(id.may_join("team-a", Some(&["team-*".to_owned()])));
        assert!(id.may_join("dm-ann-bob", Some(&["dm-ann-*".to_owned()])));
    }
}
