//! pierd's own log output (tracing), as text or JSON on stderr, and the
//! export of its spans when tracing is on ([`crate::telemetry`]).

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};
use crate::telemetry::Tracer;

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber. The level was checked with the configuration.
pub fn init(config: &LogConfig, tracer: Option<&Tracer>) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let output: Boxed = match config.format {
        LogFormat::Text => output.with_filter(filter).boxed(),
        LogFormat::Json => output
            .json()
            .flatten_event(true)
            .with_filter(filter)
            .boxed(),
    };
    // The export sees every span at info and above, whatever the log level:
    // an operator who quiets the log still gets whole traces.
    let export: Option<Boxed> = tracer.map(|t| {
        t.layer()
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
            .boxed()
    });
    // A second init (only possible in tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(
            vec![Some(output), export]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>(),
        )
        .try_init();
}
