use std::path::{Path, PathBuf};

use clap::Parser;

use super::*;
use crate::cli::Cli;

/// A config file and drop-in dir in a temp dir, isolated from /etc/pier.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("pier.d")).expect("mkdir pier.d");
        std::fs::write(dir.path().join("pier.toml"), "").expect("write pier.toml");
        Self { dir }
    }

    fn main(&self, text: &str) -> &Self {
        std::fs::write(self.dir.path().join("pier.toml"), text).expect("write");
        self
    }

    fn dropin(&self, name: &str, text: &str) -> &Self {
        std::fs::write(self.dir.path().join("pier.d").join(name), text).expect("write");
        self
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn load_with(&self, flags: &[&str]) -> Result<Config, ConfigError> {
        let main = self.path("pier.toml");
        let dir = self.path("pier.d");
        let mut args = vec![
            "pierd",
            "--config",
            path_str(&main),
            "--config-dir",
            path_str(&dir),
        ];
        args.extend_from_slice(flags);
        Cli::try_parse_from(args)
            .expect("flags parse")
            .flags
            .effective_config()
    }

    fn load(&self) -> Result<Config, ConfigError> {
        self.load_with(&[])
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

#[test]
fn empty_files_give_the_embedded_defaults() {
    let config = Files::new().load().expect("load");
    assert_eq!(config, Config::default());
    assert_eq!(config.listen, Path::new("/run/pier/pier.sock"));
    assert_eq!(config.runtime.default_runtime, "runc");
    assert_eq!(config.cni.conf_dir, Path::new("/etc/cni/net.d"));
    assert_eq!(config.container_logs.max_file_size, 0);
}

#[test]
fn printed_defaults_read_back_identically() {
    let text = toml::to_string_pretty(&Config::default()).expect("serialize");
    for key in [
        "listen",
        "[runtime.handlers.runc]",
        "[streaming]",
        "max_line_size",
        "plugin_dirs",
    ] {
        assert!(text.contains(key), "printed config lacks {key}:\n{text}");
    }
    let files = Files::new();
    files.main(&text);
    assert_eq!(files.load().expect("load"), Config::default());
}

#[test]
fn main_file_values_override_defaults() {
    let files = Files::new();
    files.main(
        "listen = \"/tmp/a.sock\"\n[cni]\nconf_dir = \"/tmp/cni\"\n\
         [registry]\ninsecure = [\"127.0.0.1:5000\"]\n[log]\nformat = \"json\"\n",
    );
    let config = files.load().expect("load");
    assert_eq!(config.listen, Path::new("/tmp/a.sock"));
    assert_eq!(config.cni.conf_dir, Path::new("/tmp/cni"));
    assert_eq!(
        config.cni.plugin_dirs,
        CniConfig::default().plugin_dirs,
        "sibling keys keep defaults"
    );
    assert_eq!(config.registry.insecure, ["127.0.0.1:5000"]);
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn dropins_apply_in_name_order_after_the_main_file() {
    let files = Files::new();
    files
        .main("root = \"/srv/main\"\nrunroot = \"/srv/run-main\"\n")
        .dropin("20-late.toml", "root = \"/srv/late\"\n")
        .dropin(
            "10-early.toml",
            "root = \"/srv/early\"\nlisten = \"/srv/early.sock\"\n",
        )
        .dropin("30-ignored.conf", "this is not toml and not a drop-in");
    let config = files.load().expect("load");
    assert_eq!(config.root, Path::new("/srv/late"));
    assert_eq!(config.listen, Path::new("/srv/early.sock"));
    assert_eq!(config.runroot, Path::new("/srv/run-main"));
}

#[test]
fn flags_override_files() {
    let files = Files::new();
    files.main(
        "listen = \"/tmp/file.sock\"\n[registry.mirrors]\n\"docker.io\" = [\"https://m.example\"]\n",
    );
    let config = files
        .load_with(&[
            "--listen",
            "/tmp/flag.sock",
            "--registry-mirror",
            "registry.k8s.io=http://127.0.0.1:5000",
            "--registry-mirror",
            "docker.io=http://127.0.0.1:5001",
            "--insecure-registry",
            "127.0.0.1:5000",
            "--streaming-address",
            "127.0.0.1:10010",
            "--log-level",
            "debug",
        ])
        .expect("load");
    assert_eq!(config.listen, Path::new("/tmp/flag.sock"));
    assert_eq!(
        config.registry.mirrors["registry.k8s.io"],
        ["http://127.0.0.1:5000"]
    );
    assert_eq!(
        config.registry.mirrors["docker.io"],
        ["http://127.0.0.1:5001"]
    );
    assert_eq!(config.registry.insecure, ["127.0.0.1:5000"]);
    assert_eq!(config.streaming.address.port(), 10010);
    assert_eq!(config.log.level, "debug");
}

#[test]
fn default_runtime_flag_takes_a_handler_name_or_a_binary() {
    let files = Files::new();
    files.main("[runtime.handlers.crun]\n");
    let by_name = files
        .load_with(&["--default-runtime", "crun"])
        .expect("load");
    assert_eq!(by_name.runtime.default_runtime, "crun");
    assert_eq!(by_name.runtime.handlers["crun"].path, Path::new("crun"));
    assert!(
        by_name.runtime.handlers.contains_key("runc"),
        "built-in handler kept"
    );
    let by_path = files
        .load_with(&["--default-runtime", "/opt/bin/runc"])
        .expect("load");
    assert_eq!(by_path.runtime.default_runtime, "runc");
    assert_eq!(
        by_path.runtime.handlers["runc"].path,
        Path::new("/opt/bin/runc")
    );
}

#[test]
fn unknown_key_names_file_and_key() {
    let files = Files::new();
    files.dropin("50-typo.toml", "[cni]\nconf_dri = \"/x\"\n");
    let err = files.load().expect_err("unknown key accepted").to_string();
    assert!(err.contains("50-typo.toml"), "{err}");
    assert!(err.contains("cni.conf_dri"), "{err}");
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn bad_values_name_file_key_and_reason() {
    let cases = [
        ("listen = 3\n", "listen", "invalid type"),
        ("root = \"relative/dir\"\n", "root", "not an absolute path"),
        ("[log]\nformat = \"xml\"\n", "log.format", "unknown variant"),
        (
            "[streaming]\naddress = \"nowhere\"\n",
            "streaming.address",
            "invalid",
        ),
        (
            "[registry.mirrors]\n\"docker.io\" = [\"ftp://m\"]\n",
            "registry.mirrors.docker.io",
            "http",
        ),
        (
            "[streaming]\nmax_sessions = 0\n",
            "streaming.max_sessions",
            "at least 1",
        ),
        (
            "[streaming]\ntoken_ttl_seconds = 0\n",
            "streaming.token_ttl_seconds",
            "at least 1",
        ),
        (
            "[container_logs]\nmax_line_size = 1\n",
            "container_logs.max_line_size",
            "too small",
        ),
        (
            "[images]\nmax_unpacked_bytes = 0\n",
            "images.max_unpacked_bytes",
            "at least 1",
        ),
        ("listen = \n", "pier.toml", "TOML parse error"),
    ];
    for (text, key, reason) in cases {
        let files = Files::new();
        files.main(text);
        let err = files.load().expect_err(text).to_string();
        assert!(err.contains("pier.toml"), "{text:?}: {err}");
        assert!(err.contains(key), "{text:?}: {err}");
        assert!(err.contains(reason), "{text:?}: {err}");
    }
}

#[test]
fn default_runtime_must_name_a_handler() {
    let files = Files::new();
    files.main("[runtime]\ndefault_runtime = \"kata\"\n");
    let err = files
        .load()
        .expect_err("unknown handler accepted")
        .to_string();
    assert!(
        err.contains("runtime.default_runtime") && err.contains("kata"),
        "{err}"
    );
}

#[test]
fn explicit_missing_file_is_an_error() {
    let files = Files::new();
    let missing = files.path("absent.toml");
    let err = Cli::try_parse_from(["pierd", "--config", path_str(&missing)])
        .expect("parse")
        .flags
        .effective_config()
        .expect_err("missing file accepted")
        .to_string();
    assert!(err.contains("absent.toml"), "{err}");
}

#[test]
fn shipped_config_file_gives_the_defaults() {
    let files = Files::new();
    files.main(include_str!("../../../contrib/pier.toml"));
    assert_eq!(
        files.load().expect("contrib/pier.toml loads"),
        Config::default()
    );
}

#[test]
fn metrics_and_tracing_are_off_by_default_and_printed_as_such() {
    let config = Files::new().load().expect("defaults");
    assert_eq!(config.metrics.address, None);
    assert!(config.tracing.endpoint.is_empty());
    let printed = toml::to_string_pretty(&config).expect("print");
    assert!(printed.contains("[metrics]\naddress = \"\""), "{printed}");
    // What `pierd config` prints reads back as the same configuration.
    let again = Files::new().main(&printed).load().expect("reload");
    assert_eq!(again, config);
}

#[test]
fn metrics_and_tracing_come_from_files_and_flags() {
    let files = Files::new();
    files.main(
        "[metrics]\naddress = \"127.0.0.1:9100\"\n\
         [tracing]\nendpoint = \"http://127.0.0.1:4317\"\nsampling_rate = 0.25\n",
    );
    let config = files.load().expect("file");
    assert_eq!(config.metrics.address, Some(([127, 0, 0, 1], 9100).into()));
    assert_eq!(config.tracing.sampling_rate, 0.25);
    let config = files
        .load_with(&[
            "--metrics-address",
            "0.0.0.0:9200",
            "--tracing-endpoint",
            "https://collector:4317",
            "--tracing-sampling-rate",
            "0",
        ])
        .expect("flags");
    assert_eq!(config.metrics.address, Some(([0, 0, 0, 0], 9200).into()));
    assert_eq!(config.tracing.endpoint, "https://collector:4317");
    assert_eq!(config.tracing.sampling_rate, 0.0);
}

#[test]
fn bad_metrics_and_tracing_values_name_their_key() {
    for (text, key) in [
        ("[metrics]\naddress = \"localhost\"\n", "address"),
        ("[tracing]\nprotocol = \"http\"\n", "protocol"),
        ("[tracing]\nsampling_rate = -0.1\n", "tracing.sampling_rate"),
        (
            "[tracing]\nendpoint = \"127.0.0.1:4317\"\n",
            "tracing.endpoint",
        ),
    ] {
        let err = Files::new().main(text).load().expect_err(text).to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn the_unpack_limit_is_shown_and_comes_from_files_and_flags() {
    let config = Files::new().load().expect("defaults");
    assert_eq!(config.images.max_unpacked_bytes, DEFAULT_MAX_UNPACKED_BYTES);
    let printed = toml::to_string_pretty(&config).expect("print");
    assert!(
        printed.contains("[images]\nmax_unpacked_bytes = 3000000000"),
        "{printed}"
    );
    let files = Files::new();
    files.main("[images]\nmax_unpacked_bytes = 1048576\n");
    assert_eq!(
        files.load().expect("file").images.max_unpacked_bytes,
        1 << 20
    );
    let flagged = files
        .load_with(&["--max-unpacked-bytes", "2097152"])
        .expect("flag");
    assert_eq!(flagged.images.max_unpacked_bytes, 2 << 20);
    let store = crate::service::image_store_config(&flagged);
    assert_eq!(
        store.max_unpacked_bytes,
        2 << 20,
        "the store gets the limit"
    );
}
