//! Identity from the host app (issue 15, PROTOCOL.md "Host identity"), with
//! keys the tests make: an HS256 secret, and an ES256 key pair (made by
//! `openssl`) whose public half the test serves as a JWK set on loopback
//! and writes to a file. Valid tokens sign in as their `sub`; expired,
//! wrong-audience, wrong-key, unknown-`kid` and `alg: none` tokens are
//! refused; private rooms admit only a token that lists them; a session
//! ends with 4001 at its `exp` unless a `refresh` moved it.

use crate::support::{unique_id, Client, Incoming, TestServer};
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use protocol::{ClientFrame, ErrorCode};
use server::config::{Config, IdentityConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "host-app-secret-0123456789";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn hs256(secret: &str, claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).expect("key"),
    )
    .expect("encode")
}

/// A server taking host tokens signed with [`SECRET`], `team-*` and
/// `dm-*` private.
async fn server(audience: Option<&str>) -> TestServer {
    let mut cfg = Config::for_tests();
    cfg.identity = IdentityConfig {
        secret: Some(SECRET.to_owned()),
        audience: audience.map(str::to_owned),
        private_rooms: vec!["team-*".into(), "dm-*".into()],
        allow_guests: true,
        ..IdentityConfig::default()
    };
    TestServer::start(cfg).await
}

/// Says `hello` with `token` and expects `unauthorized` then close 1008.
async fn refused(server: &TestServer, token: &str, why: &str) {
    let mut c = server.connect().await;
    c.send(&ClientFrame::Hello {
        name: "mallory".into(),
        token: Some(token.to_owned()),
    })
    .await;
    c.expect_error(ErrorCode::Unauthorized, None).await;
    assert_eq!(c.expect_close().await, 1008, "{why}");
}

#[tokio::test]
async fn a_valid_hs256_token_signs_in_as_its_sub_and_bad_ones_are_refused() {
    let server = server(Some("chat")).await;
    let token = hs256(
        SECRET,
        serde_json::json!({"sub": "alice-42", "name": "Alice", "aud": "chat", "exp": now_secs() + 3600}),
    );
    let mut alice = server.connect().await;
    let user = alice.hello_host("typed name", &token).await;
    assert_eq!(
        (user.id.as_str(), user.name.as_str()),
        ("alice-42", "Alice")
    );
    alice.join("general").await;
    alice.post("general", "hello as the host's user").await;

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let cases = [
        (
            hs256(
                SECRET,
                serde_json::json!({"sub": "a", "aud": "chat", "exp": now_secs() - 5}),
            ),
            "expired",
        ),
        (
            hs256(
                SECRET,
                serde_json::json!({"sub": "a", "aud": "other-app", "exp": now_secs() + 60}),
            ),
            "wrong audience",
        ),
        (
            hs256(
                "not-the-host-secret-98765",
                serde_json::json!({"sub": "a", "aud": "chat", "exp": now_secs() + 60}),
            ),
            "wrong key",
        ),
        (
            format!(
                "{}.{}.",
                b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
                b64.encode(format!(
                    r#"{{"sub":"a","aud":"chat","exp":{}}}"#,
                    now_secs() + 60
                ))
            ),
            "alg none",
        ),
        (
            hs256(
                SECRET,
                serde_json::json!({"aud": "chat", "exp": now_secs() + 60}),
            ),
            "no sub",
        ),
    ];
    for (token, why) in &cases {
        refused(&server, token, why).await;
    }
}

#[tokio::test]
async fn private_rooms_admit_only_a_token_that_lists_them() {
    let server = server(None).await;
    let mut guest = server.login("guest").await;
    let mut listed = server.connect().await;
    listed
        .hello_host(
            "x",
            &hs256(
                SECRET,
                serde_json::json!({"sub": "ann", "exp": now_secs() + 3600, "rooms": ["team-red", "dm-ann-*"]}),
            ),
        )
        .await;
    let mut unlisted = server.connect().await;
    unlisted
        .hello_host(
            "x",
            &hs256(
                SECRET,
                serde_json::json!({"sub": "bob", "exp": now_secs() + 3600, "rooms": ["team-blue"]}),
            ),
        )
        .await;
    for client in [&mut guest, &mut unlisted] {
        for room in ["team-red", "dm-ann-bob"] {
            client
                .send(&ClientFrame::Join {
                    room: room.into(),
                    since: None,
                })
                .await;
            client.expect_error(ErrorCode::Forbidden, None).await;
        }
    }
    listed.join("team-red").await;
    listed.join("dm-ann-bob").await;
    unlisted.join("team-blue").await;
    guest.join("general").await;
}

/// An ES256 key pair made by `openssl`: (PKCS#8 private key PEM, JWK of
/// the public key with `kid`).
fn es256_key(dir: &std::path::Path, kid: &str) -> (Vec<u8>, serde_json::Value) {
    let run = |args: &[&str]| crate::procs::openssl(dir, args);
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ec.pem",
    ]);
    let pkcs8 = run(&["pkcs8", "-topk8", "-nocrypt", "-in", "ec.pem"]);
    let spki = run(&["ec", "-in", "ec.pem", "-pubout", "-outform", "DER"]);
    // An uncompressed P-256 point ends the SPKI: 0x04, x (32 bytes), y.
    let point = &spki[spki.len() - 65..];
    assert_eq!(point[0], 4, "uncompressed point");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..]),
    });
    (pkcs8, jwk)
}

fn es256(pem: &[u8], kid: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(pem).expect("EC key"),
    )
    .expect("encode")
}

/// Serves `body` at `/.well-known/jwks.json` on loopback.
async fn serve_jwks(body: String) -> SocketAddr {
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn es256_tokens_are_checked_against_a_jwks_served_over_http_or_read_from_a_file() {
    let dir = std::env::temp_dir().join(unique_id("jwks"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (pem, jwk) = es256_key(&dir, "k1");
    let (other_pem, _) = es256_key(&dir, "k2");
    let set = serde_json::json!({ "keys": [jwk] }).to_string();
    let file = dir.join("jwks.json");
    std::fs::write(&file, &set).expect("write JWKS");
    let addr = serve_jwks(set).await;

    for source in [
        format!("http://{addr}/.well-known/jwks.json"),
        file.display().to_string(),
    ] {
        let mut cfg = Config::for_tests();
        cfg.identity = IdentityConfig {
            jwks: Some(source.clone()),
            issuer: Some("https://host.example".into()),
            allow_guests: false,
            ..IdentityConfig::default()
        };
        let server = TestServer::start(cfg).await;
        let claims = |sub: &str| serde_json::json!({"sub": sub, "iss": "https://host.example", "exp": now_secs() + 600});
        let mut carol = server.connect().await;
        let user = carol
            .hello_host("Carol", &es256(&pem, "k1", claims("carol")))
            .await;
        assert_eq!(user.id, "carol", "{source}");
        carol.join("general").await;

        // Signed by a key the set does not hold, under its kid and under
        // the set's; an HS256 token where only public keys are configured;
        // the wrong issuer; no token at all (guests are off).
        refused(
            &server,
            &es256(&other_pem, "k2", claims("eve")),
            "unknown kid",
        )
        .await;
        refused(
            &server,
            &es256(&other_pem, "k1", claims("eve")),
            "wrong key",
        )
        .await;
        refused(
            &server,
            &hs256(SECRET, claims("eve")),
            "HS256 without a secret",
        )
        .await;
        let wrong_iss = serde_json::json!({"sub": "eve", "iss": "https://evil.example", "exp": now_secs() + 600});
        refused(&server, &es256(&pem, "k1", wrong_iss), "wrong issuer").await;
        let mut guest = server.connect().await;
        guest
            .send(&ClientFrame::Hello {
                name: "guest".into(),
                token: None,
            })
            .await;
        guest.expect_error(ErrorCode::Unauthorized, None).await;
        assert_eq!(guest.expect_close().await, 1008);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads until the close; answers its code and when it came.
async fn closed_at(client: &mut Client, within: Duration) -> (u16, Instant) {
    loop {
        match client.next_within(within).await {
            Incoming::Close(Some(code)) => return (code, Instant::now()),
            Incoming::Frame(_) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_session_ends_with_4001_at_its_exp_unless_a_refresh_moves_it() {
    let server = server(None).await;
    // Whole seconds: `exp` is in seconds. Both tokens end 2–3 s from now.
    let exp = now_secs() + 3;
    let token = |sub: &str, exp: u64| hs256(SECRET, serde_json::json!({"sub": sub, "exp": exp}));

    let mut short = server.connect().await;
    short.hello_host("short", &token("dora", exp)).await;
    let mut refreshed = server.connect().await;
    refreshed.hello_host("long", &token("ed", exp)).await;
    // A refresh for another user is refused and changes nothing.
    refreshed
        .send(&ClientFrame::Refresh {
            token: token("someone-else", exp + 60),
        })
        .await;
    refreshed.expect_error(ErrorCode::Unauthorized, None).await;
    refreshed
        .send(&ClientFrame::Refresh {
            token: token("ed", exp + 60),
        })
        .await;

    let (code, at) = closed_at(&mut short, Duration::from_secs(10)).await;
    assert_eq!(code, 4001, "the token expired");
    assert!(
        SystemTime::now() >= UNIX_EPOCH + Duration::from_secs(exp),
        "closed before exp"
    );
    // Well past the first token's exp, the refreshed session still works.
    tokio::time::sleep_until((at + Duration::from_millis(1500)).into()).await;
    refreshed.join("general").await;
    refreshed.post("general", "still signed in").await;
    // A guest session cannot refresh.
    let mut guest = server.login("guest").await;
    guest
        .send(&ClientFrame::Refresh {
            token: token("guest", exp + 60),
        })
        .await;
    guest.expect_error(ErrorCode::Unauthorized, None).await;
}

#[test]
fn bad_identity_settings_are_refused_at_start() {
    use clap::Parser as _;
    for (args, says) in [
        (vec!["--jwt-secret", "short"], "--jwt-secret"),
        (vec!["--private-rooms", "team-*"], "--private-rooms"),
        (vec!["--allow-guests", "false"], "--allow-guests"),
    ] {
        let mut argv = vec!["server", "--redis-url", "", "--database-url", "none"];
        argv.extend(args);
        let err = server::config::Args::parse_from(&argv)
            .validate()
            .expect_err("refused");
        assert!(err.to_string().contains(says), "{err}");
    }
}

/// The siblings of ES256 the JWK set may hold: RS256 and EdDSA (Ed25519)
/// keys made by `openssl`, each signing in through its own `kid`; a token
/// naming one key's `kid` with another family's algorithm is refused.
#[tokio::test]
async fn rs256_and_eddsa_keys_of_the_set_sign_in_and_an_algorithm_that_is_not_the_keys_is_refused()
{
    let dir = std::env::temp_dir().join(unique_id("jwks-algs"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let run = |args: &[&str]| crate::procs::openssl(&dir, args);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;

    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "rsa.pem",
    ]);
    let modulus =
        String::from_utf8(run(&["rsa", "-in", "rsa.pem", "-noout", "-modulus"])).expect("text");
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let rsa_jwk = serde_json::json!({
        "kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k-rsa",
        "n": b64.encode(&n), "e": "AQAB",
    });
    run(&["genpkey", "-algorithm", "ed25519", "-out", "ed.pem"]);
    let spki = run(&["pkey", "-in", "ed.pem", "-pubout", "-outform", "DER"]);
    let ed_jwk = serde_json::json!({
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "k-ed",
        "x": b64.encode(&spki[spki.len() - 32..]),
    });
    let (ec_pem, ec_jwk) = es256_key(&dir, "k-ec");
    let file = dir.join("jwks.json");
    let set = serde_json::json!({ "keys": [rsa_jwk, ed_jwk, ec_jwk] });
    std::fs::write(&file, set.to_string()).expect("write JWKS");

    let mut cfg = Config::for_tests();
    cfg.identity = IdentityConfig {
        jwks: Some(file.display().to_string()),
        allow_guests: true,
        ..IdentityConfig::default()
    };
    let server = TestServer::start(cfg).await;
    let sign = |alg: Algorithm, kid: &str, key: EncodingKey, sub: &str| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        encode(
            &header,
            &serde_json::json!({"sub": sub, "exp": now_secs() + 600}),
            &key,
        )
        .expect("encode")
    };
    let rsa_pem = std::fs::read(dir.join("rsa.pem")).expect("rsa key");
    let ed_pem = std::fs::read(dir.join("ed.pem")).expect("ed key");
    for (token, sub) in [
        (
            sign(
                Algorithm::RS256,
                "k-rsa",
                EncodingKey::from_rsa_pem(&rsa_pem).expect("rsa"),
                "rita",
            ),
            "rita",
        ),
        (
            sign(
                Algorithm::EdDSA,
                "k-ed",
                EncodingKey::from_ed_pem(&ed_pem).expect("ed"),
                "ed",
            ),
            "ed",
        ),
        (
            sign(
                Algorithm::ES256,
                "k-ec",
                EncodingKey::from_ec_pem(&ec_pem).expect("ec"),
                "eve",
            ),
            "eve",
        ),
    ] {
        let mut c = server.connect().await;
        assert_eq!(c.hello_host("x", &token).await.id, sub);
    }
    // The RSA key's kid, but signed (validly) with the EC key as ES256.
    refused(
        &server,
        &sign(
            Algorithm::ES256,
            "k-rsa",
            EncodingKey::from_ec_pem(&ec_pem).expect("ec"),
            "mallory",
        ),
        "an ES256 token naming the RSA key",
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
