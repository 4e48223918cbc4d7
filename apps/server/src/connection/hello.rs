//! The first step of a connection: `hello` within the deadline, the
//! session token checked or issued, `welcome` answered (PROTOCOL.md,
//! "Session").

use super::{Connection, End};
use crate::codec::{self, DecodeError, Decoded};
use crate::session::Sessions;
use futures_util::StreamExt;
use protocol::{ClientFrame, CloseCode, ErrorCode, Name, ServerFrame, User};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio_tungstenite::tungstenite::Message;

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
            self.last_seen = Instant::now();
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
        let (user_id, since) = match token {
            None => (Sessions::new_user_id(), None),
            Some(token) => match self.ctx.sessions.verify(&token, now) {
                Ok(session) => (session.user_id, Some(session.since)),
                Err(e) => {
                    self.error(ErrorCode::Unauthorized, &e.to_string(), None)
                        .await?;
                    return Err(End::Close(CloseCode::PolicyViolation, "bad token"));
                }
            },
        };
        tracing::Span::current().record("user", user_id.as_str());
        let user = User {
            id: user_id,
            name: name.into_string(),
        };
        let welcome = ServerFrame::Welcome {
            protocol: protocol::PROTOCOL_VERSION,
            token: self.ctx.sessions.issue(&user.id, now, since),
            user: user.clone(),
            server: self.ctx.config.instance_id.clone(),
        };
        self.ctx.live.signed_in(self.id, &user.id);
        self.user = Some(Arc::new(user));
        self.reply(&welcome).await
    }
}
