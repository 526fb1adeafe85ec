//! Starting pierd: directories, locks, database, socket, then serving CRI
//! until SIGTERM or SIGINT. Shutdown leaves every container running.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use pier_storage::Database;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::StreamExt;
use tonic::transport::Server;

use crate::authority::AuthorityRepair;
use crate::config::Config;
use crate::daemon::Daemon;
use crate::error::StartError;
use crate::host::linux::LinuxHost;
use crate::metrics::CriMetricsLayer;
use crate::service::{ImageService, RuntimeService};
use crate::socket;
use crate::streaming::Streaming;

/// Kubelet sends and accepts CRI messages up to 16 MiB (ListContainers on a
/// full node is large); tonic's default of 4 MiB would refuse them.
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// How long requests in flight may run on after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves CRI until a termination signal arrives.
pub async fn serve(config: Config) -> Result<(), StartError> {
    for dir in [&config.root, &config.runroot] {
        create_dir(dir)?;
    }
    let _root_lock = socket::lock_state_root(&config.root)?;
    let db_path = config.database_path();
    let db = tokio::task::spawn_blocking(move || Database::open(&db_path)).await??;
    let (listener, _socket) = socket::bind(&config.listen)?;
    let listener =
        tokio::net::UnixListener::from_std(listener).map_err(|source| StartError::Listen {
            path: config.listen.clone(),
            source,
        })?;

    let listen = config.listen.clone();
    let db = Arc::new(std::sync::Mutex::new(db));
    let images = pier_storage::ImageStore::open(
        crate::service::image_store_config(&config),
        Arc::clone(&db),
    )
    .await?;
    let daemon = Arc::new(Daemon::new(config, db, images, Arc::new(LinuxHost)));
    // Bound before anything else is started, so a port in use stops pierd
    // with nothing to undo.
    let metrics_endpoint = match daemon.config.metrics.address {
        Some(address) => Some(crate::metrics::bind(address, Arc::clone(&daemon.metrics)).await?),
        None => None,
    };
    // Container exits are watched before anything else reads their state.
    if let Err(e) = crate::container::reconcile(&daemon).await {
        tracing::error!(error = %e, "reconciling containers failed");
    }
    if let Err(e) = crate::sandbox::reconcile(&daemon).await {
        // Serving with stale state beats not serving: kubelet re-syncs pods.
        tracing::error!(error = %e, "reconciling sandboxes failed");
    }
    let metrics_task = match metrics_endpoint {
        Some(endpoint) => {
            daemon.metrics.refresh().await;
            if let Some(address) = endpoint.local_addr() {
                tracing::info!(%address, "serving metrics at /metrics");
            }
            Some(tokio::spawn(endpoint.serve()))
        }
        None => None,
    };
    let trimmer = tokio::spawn(crate::memory::trim_periodically());
    let streaming_config = daemon.config.streaming.clone();
    let (streaming, streaming_task) =
        Streaming::start(&streaming_config, Arc::clone(&daemon)).await?;
    let runtime =
        RuntimeServiceServer::new(RuntimeService::new(Arc::clone(&daemon), streaming.clone()))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let images = ImageServiceServer::new(ImageService::new(Arc::clone(&daemon)))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let signal = shutdown_signal()?;
    let incoming = socket::incoming(listener).map(|conn| conn.map(AuthorityRepair::new));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();

    tracing::info!(socket = %listen.display(), version = env!("CARGO_PKG_VERSION"), "pierd serving CRI");
    let tracing_on = !daemon.config.tracing.endpoint.is_empty();
    let count_calls = daemon
        .config
        .metrics
        .address
        .map(|_| CriMetricsLayer(Arc::clone(&daemon.metrics)));
    let server = Server::builder()
        .trace_fn(move |request| request_span(request, tracing_on))
        .timeout(Duration::from_secs(30 * 60))
        .layer(tower::util::option_layer(count_calls))
        .add_service(runtime)
        .add_service(images)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        () = signal => {
            let _ = stop_tx.send(());
            // Kubelet keeps its connection open forever, so graceful shutdown
            // would never finish on its own: give requests in flight a bound.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still open after the grace period");
            }
        }
    }
    // Open exec/attach/port-forward sessions end with the daemon; their
    // containers do not.
    streaming.shutdown();
    let _ = streaming_task.await;
    if let Some(task) = metrics_task {
        task.abort();
    }
    trimmer.abort();
    tracing::info!("pierd stopped; containers keep running");
    Ok(())
}

/// One span per CRI call, named by its method. Handlers record the ids they
/// work on into the empty fields. With tracing on, the caller's trace (if
/// it sent one) becomes the span's parent.
fn request_span(request: &http::Request<()>, tracing_on: bool) -> tracing::Span {
    let method = request.uri().path().rsplit('/').next().unwrap_or_default();
    let span = tracing::info_span!(
        "cri",
        method,
        pod_id = tracing::field::Empty,
        container_id = tracing::field::Empty,
        image = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    if tracing_on {
        // Exported spans are named by the CRI method, as kubelet's client
        // spans are; the log keeps its one `cri` span name.
        span.record("otel.name", method);
        span.record("otel.kind", "server");
        crate::telemetry::adopt_parent(&span, request.headers());
    }
    span
}

fn create_dir(dir: &Path) -> Result<(), StartError> {
    std::fs::create_dir_all(dir).map_err(|source| StartError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

/// Resolves when SIGTERM or SIGINT arrives. Installed before serving, so a
/// signal that comes during startup is not lost.
fn shutdown_signal() -> Result<impl Future<Output = ()>, StartError> {
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(StartError::Signal)?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
    })
}
