//! Counts and times every CRI call at the edge of the gRPC server, so no
//! handler has to remember to.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};

use super::Metrics;

/// The CRI services whose methods are counted by name; anything else is
/// counted as `unknown`, so a client cannot grow the series without bound.
const SERVICES: [&str; 2] = ["/runtime.v1.RuntimeService/", "/runtime.v1.ImageService/"];

#[derive(Clone)]
pub struct CriMetricsLayer(pub Arc<Metrics>);

impl<S> Layer<S> for CriMetricsLayer {
    type Service = CriMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CriMetrics {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
pub struct CriMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<http::Request<B>> for CriMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_of(request.uri().path()).to_owned();
        let started = Instant::now();
        let answer = self.inner.call(request);
        let metrics = Arc::clone(&self.metrics);
        Box::pin(async move {
            let response = answer.await;
            let code = match &response {
                Ok(response) => code_of(response.headers()),
                Err(_) => tonic::Code::Unknown,
            };
            metrics.record_call(&method, code, started.elapsed());
            response
        })
    }
}

/// `/runtime.v1.RuntimeService/RunPodSandbox` → `RunPodSandbox`.
fn method_of(path: &str) -> &str {
    SERVICES
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
        .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("unknown")
}

/// A failed call's status travels in the response headers (tonic answers
/// errors "trailers-only"); a successful one ends with `grpc-status: 0` in
/// the trailers, after the headers this layer sees.
fn code_of(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_named_only_for_the_cri_services() {
        assert_eq!(
            method_of("/runtime.v1.RuntimeService/RunPodSandbox"),
            "RunPodSandbox"
        );
        assert_eq!(method_of("/runtime.v1.ImageService/PullImage"), "PullImage");
        assert_eq!(
            method_of("/runtime.v1alpha2.RuntimeService/Version"),
            "unknown"
        );
        assert_eq!(method_of("/runtime.v1.RuntimeService/"), "unknown");
        assert_eq!(method_of("/runtime.v1.RuntimeService/a/b"), "unknown");
    }

    #[test]
    fn status_comes_from_the_headers_or_is_ok() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_of(&headers), tonic::Code::Ok);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(code_of(&headers), tonic::Code::NotFound);
        headers.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(code_of(&headers), tonic::Code::Ok);
    }
}
