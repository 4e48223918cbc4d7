//! OpenTelemetry traces (issue 16): two server processes export OTLP/HTTP
//! protobuf to a collector this test serves on loopback and decodes with
//! the OpenTelemetry protocol's own types. A message published on one
//! instance and delivered on the other is one trace: the receiving
//! instance's `deliver` span is the child of the sender's `publish` span.

use crate::cluster::{login, FAST};
use crate::procs::{Redis, ServerProc};
use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One exported span: (instance, name, trace id, span id, parent span id).
#[derive(Debug, Clone)]
struct Span {
    instance: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
}

/// An OTLP/HTTP collector: every span posted to `/v1/traces`.
async fn collector() -> (SocketAddr, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut kept = kept.lock().unwrap();
                for rs in request.resource_spans {
                    let instance = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.instance.id")
                        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                            Value::StringValue(s) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                        kept.push(Span {
                            instance: instance.clone(),
                            name: span.name,
                            trace: span.trace_id,
                            id: span.span_id,
                            parent: span.parent_span_id,
                        });
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, spans)
}

#[tokio::test]
async fn a_message_is_one_trace_from_the_senders_instance_to_the_receivers() {
    let (addr, spans) = collector().await;
    let endpoint = format!("http://{addr}");
    let redis = Redis::start().await;
    let args: Vec<&str> = FAST
        .iter()
        .copied()
        .chain(["--otlp-endpoint", &endpoint])
        .collect();
    let mut a = ServerProc::start("trace-a", &redis.url(), &args).await;
    let mut b = ServerProc::start("trace-b", &redis.url(), &args).await;
    let mut alice = login(&a, "alice").await;
    alice.join("traced").await;
    let mut bob = login(&b, "bob").await;
    bob.join("traced").await;
    let sent = alice.send_acked("traced", "c-1", "traced hello").await;
    loop {
        match bob.recv().await {
            protocol::ServerFrame::Message(m) if m.offset == sent => break,
            _ => {}
        }
    }
    // A stopping instance sends what it batched.
    a.terminate().await;
    b.terminate().await;

    let spans = spans.lock().unwrap().clone();
    let named = |instance: &str, name: &str| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| s.instance == instance && s.name == name)
            .collect()
    };
    for instance in ["trace-a", "trace-b"] {
        for name in ["conn", "join", "deliver"] {
            assert!(
                !named(instance, name).is_empty(),
                "no {name} span from {instance}: {spans:?}"
            );
        }
    }
    let publish = named("trace-a", "publish");
    assert_eq!(publish.len(), 1, "{spans:?}");
    let publish = publish[0];
    for instance in ["trace-a", "trace-b"] {
        let deliver = named(instance, "deliver");
        assert!(
            deliver
                .iter()
                .any(|d| d.trace == publish.trace && d.parent == publish.id),
            "{instance}'s deliver span is not the child of the publish span: {spans:?}"
        );
    }
}
