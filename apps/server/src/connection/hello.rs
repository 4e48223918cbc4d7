//! The first step of a connection: `hello` within the deadline, the
//! session token checked or issued, `welcome` answered (PROTOCOL.md,
//! "Session").

use super::{Connection, End};
use crate::codec::{self, DecodeError, Decoded};
use crate::identity::{HostSession, Identity};
use crate::session::Sessions;
use futures_util::StreamExt;
use protocol::{ClientFrame, CloseCode, ErrorCode, Name, ServerFrame, User};
use std::sync::Arc;
use std::time::SystemTime;
use tungstenite::Message;

impl Connection {
    /// Waits for `hello`, the only frame allowed first, and answers `welcome`.
    pub(super) async fn hello(&mut self) -> Result<(), End> {
        let deadline = tokio::time::sleep(self.ctx.config.hello_timeout);
        tokio::pin!(deadline);
        let outbox = self.outbox.clone();
        let frame = loop {
            let msg = tokio::select! {
                // Nothing is queued before a join: this is a kick (shutdown).
                () = outbox.changed() => {
                    self.forward().await?;
                    continue;
                }
                _ = &mut deadline => {
                    self.error(ErrorCode::Unauthorized, "no hello in time", None).await?;
                    return Err(End::Close(CloseCode::PolicyViolation, "no hello"));
                }
                msg = self.socket.next() => msg,
            };
            let Some(Ok(msg)) = msg else {
                return Err(End::Gone);
            };
            self.outbox.heard();
            match codec::decode(&msg) {
                Ok(Decoded::Control) => {}
                Ok(Decoded::Close) => return Err(End::Gone),
                Ok(Decoded::Frame(frame)) => break Some(frame),
                Err(DecodeError::TooLarge(_)) => {
                    return Err(End::Close(CloseCode::MessageTooBig, "frame too large"))
                }
                Err(DecodeError::BadFrame { .. }) => {
                    // A hello whose name cannot be read: say what is wrong.
                    if let Message::Text(text) = &msg {
                        if codec::hello_with_bad_name(text) {
                            self.count_in("hello");
                            self.error(
                                ErrorCode::BadName,
                                "the name cannot be read: it is not a string of Unicode characters",
                                None,
                            )
                            .await?;
                            return Err(End::Close(CloseCode::PolicyViolation, "bad name"));
                        }
                    }
                    break None;
                }
            }
        };
        let Some(ClientFrame::Hello { name, token }) = frame else {
            self.count_in("invalid");
            self.error(
                ErrorCode::Unauthorized,
                "the first frame must be hello",
                None,
            )
            .await?;
            return Err(End::Close(CloseCode::PolicyViolation, "no hello"));
        };
        self.count_in("hello");
        let name = match Name::parse(&name) {
            Ok(name) => name,
            Err(e) => {
                self.error(e.code(), &e.to_string(), None).await?;
                return Err(End::Close(CloseCode::PolicyViolation, "bad name"));
            }
        };
        let now = SystemTime::now();
        let identity = &self.ctx.identity;
        // A host-app token (PROTOCOL.md "Host identity"), a session token of
        // ours, or nothing (a guest, when guests are allowed).
        let signed_in = match token {
            Some(token) if identity.configured() && Identity::looks_like_jwt(&token) => identity
                .verify(&token)
                .await
                .map(|host| SignedIn::Host { host, token })
                .map_err(|e| e.to_string()),
            _ if !identity.allows_guests() => {
                self.error(
                    ErrorCode::Unauthorized,
                    "sign in with a token from the host app (guests are not allowed here)",
                    None,
                )
                .await?;
                return Err(End::Close(CloseCode::PolicyViolation, "no host token"));
            }
            None => Ok(SignedIn::Guest {
                user_id: Sessions::new_user_id(),
                since: None,
            }),
            Some(token) => self
                .ctx
                .sessions
                .verify(&token, now)
                .map(|session| SignedIn::Guest {
                    user_id: session.user_id,
                    since: Some(session.since),
                })
                .map_err(|e| e.to_string()),
        };
        let signed_in = match signed_in {
            Ok(s) => s,
            Err(e) => {
                self.error(ErrorCode::Unauthorized, &e.to_string(), None)
                    .await?;
                return Err(End::Close(CloseCode::PolicyViolation, "bad token"));
            }
        };
        let (user, token) = match signed_in {
            SignedIn::Guest { user_id, since } => {
                let token = self.ctx.sessions.issue(&user_id, now, since);
                let user = User {
                    id: user_id,
                    name: name.into_string(),
                };
                (user, token)
            }
            SignedIn::Host { host, token } => {
                let user = User {
                    id: host.user_id.clone(),
                    name: host.name.clone().unwrap_or_else(|| name.into_string()),
                };
                self.hold_host_session(host);
                (user, token)
            }
        };
        tracing::Span::current().record("user", user.id.as_str());
        let welcome = ServerFrame::Welcome {
            protocol: protocol::PROTOCOL_VERSION,
            token,
            user: user.clone(),
            server: self.ctx.config.instance_id.clone(),
        };
        let user = Arc::new(user);
        self.ctx.live.signed_in(self.id, user.clone());
        self.user = Some(user);
        self.reply(&welcome).await
    }
}

/// Who a `hello` signed in as.
enum SignedIn {
    /// A name alone, or one of our session tokens (`since`: its session's
    /// start).
    Guest { user_id: String, since: Option<u64> },
    /// A host-app token; `welcome` hands the same token back.
    Host { host: HostSession, token: String },
}
