//! OCI images built from `/bin/busybox` and pushed to a test registry.
//! Layers are deterministic (fixed mtimes and owners), so the same spec
//! always gives the same digests.

use std::collections::BTreeMap;

use flate2::Compression;
use flate2::write::GzEncoder;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Registry;

const BUSYBOX: &str = "/bin/busybox";
const MTIME: u64 = 1_700_000_000;
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// Users and groups every test image has: root, a regular user `pier`
/// (uid 1000) who is also in group `extra` (2000), and nobody.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      pier:x:1000:1000:pier:/home/pier:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\npier:x:1000:\nextra:x:2000:pier\nnogroup:x:65534:\n";

/// A file added in the image's second layer.
#[derive(Debug, Clone)]
pub struct ExtraFile {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// What an image's config says, and what files it carries beyond busybox.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub exposed_ports: Vec<String>,
    pub stop_signal: String,
    pub labels: BTreeMap<String, String>,
    pub files: Vec<ExtraFile>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            entrypoint: Vec::new(),
            cmd: vec!["sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            user: String::new(),
            working_dir: String::new(),
            exposed_ports: Vec::new(),
            stop_signal: String::new(),
            labels: BTreeMap::new(),
            files: Vec::new(),
        }
    }
}

/// An image's blobs, ready to push.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// gzip-compressed layer tars, bottom first.
    pub layers: Vec<Vec<u8>>,
    /// `sha256:` digests of the uncompressed layer tars.
    pub diff_ids: Vec<String>,
    pub config: Vec<u8>,
}

/// Where a pushed image can be pulled from.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// `127.0.0.1:<port>/<repo>:<tag>`
    pub reference: String,
    pub manifest_digest: String,
    /// The config digest, which is the image id the CRI reports.
    pub id: String,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl ImageSpec {
    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = strings(args);
        self
    }
    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = strings(args);
        self
    }
    pub fn env(mut self, var: &str) -> Self {
        self.env.push(var.into());
        self
    }
    pub fn user(mut self, user: &str) -> Self {
        self.user = user.into();
        self
    }
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = dir.into();
        self
    }
    pub fn expose(mut self, port: &str) -> Self {
        self.exposed_ports.push(port.into());
        self
    }
    pub fn stop_signal(mut self, signal: &str) -> Self {
        self.stop_signal = signal.into();
        self
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push(ExtraFile {
            path: path.into(),
            contents: contents.into(),
            mode,
        });
        self
    }

    /// Builds the layers (busybox base, plus one for extra files) and the config.
    pub fn build(&self) -> BuiltImage {
        let mut tars = vec![base_layer()];
        if !self.files.is_empty() {
            tars.push(files_layer(&self.files));
        }
        let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
        let layers = tars.iter().map(|t| gzip(t)).collect();
        let exposed: serde_json::Map<String, serde_json::Value> = self
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), json!({})))
            .collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2023-11-14T22:13:20Z",
            "config": {
                "Entrypoint": self.entrypoint,
                "Cmd": self.cmd,
                "Env": self.env,
                "User": self.user,
                "WorkingDir": self.working_dir,
                "ExposedPorts": exposed,
                "StopSignal": self.stop_signal,
                "Labels": self.labels,
            },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": [{ "created": "2023-11-14T22:13:20Z", "created_by": "pier-tests" }],
        });
        BuiltImage {
            layers,
            diff_ids,
            config: config.to_string().into_bytes(),
        }
    }

    /// Builds the image and pushes it as `<registry>/<repo_tag>`.
    pub async fn push(&self, registry: &Registry, repo_tag: &str) -> PushedImage {
        let built = self.build();
        let reference = format!("{}/{repo_tag}", registry.host());
        let parsed: Reference = reference.parse().expect("test image reference");
        let layers: Vec<ImageLayer> = built
            .layers
            .iter()
            .map(|data| ImageLayer::new(data.clone(), LAYER_MEDIA_TYPE.into(), None))
            .collect();
        let config = Config::new(built.config.clone(), CONFIG_MEDIA_TYPE.into(), None);
        let manifest = OciImageManifest::build(&layers, &config, None);
        let client = plain_http_client();
        client
            .push(
                &parsed,
                &layers,
                config,
                &RegistryAuth::Anonymous,
                Some(manifest),
            )
            .await
            .unwrap_or_else(|e| panic!("push {reference}: {e}"));
        let (_, manifest_digest) = client
            .pull_image_manifest(&parsed, &RegistryAuth::Anonymous)
            .await
            .unwrap_or_else(|e| panic!("read back manifest of {reference}: {e}"));
        PushedImage {
            reference,
            manifest_digest,
            id: sha256(&built.config),
        }
    }
}

/// An oci-client speaking plain HTTP, as the test registry does.
pub fn plain_http_client() -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn gzip(tar: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(tar).expect("gzip to memory");
    encoder.finish().expect("gzip to memory")
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header
}

/// The base layer: the usual top-level directories, busybox with every applet
/// linked in /bin, and /etc/passwd and /etc/group.
fn base_layer() -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX)
        .unwrap_or_else(|e| panic!("read {BUSYBOX} (apt install busybox-static): {e}"));
    let list = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut tar = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("var", 0o755),
    ] {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        tar.append_data(&mut h, dir, std::io::empty())
            .expect("tar dir");
    }
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    tar.append_data(&mut h, "bin/busybox", busybox.as_slice())
        .expect("tar busybox");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .expect("tar applet link");
    }
    for (path, text) in [("etc/passwd", PASSWD), ("etc/group", GROUP)] {
        let mut h = header(tar::EntryType::Regular, 0o644, text.len() as u64);
        tar.append_data(&mut h, path, text.as_bytes())
            .expect("tar etc file");
    }
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    h.set_uid(1000);
    h.set_gid(1000);
    tar.append_data(&mut h, "home/pier", std::io::empty())
        .expect("tar home");
    tar.into_inner().expect("finish tar")
}

/// A layer with the spec's extra files (parent directories created as needed).
fn files_layer(files: &[ExtraFile]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        let path = file.path.trim_start_matches('/');
        let mut parent = std::path::Path::new(path).parent();
        let mut missing = Vec::new();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            if dirs.insert(dir.to_owned()) {
                missing.push(dir.to_owned());
            }
            parent = dir.parent();
        }
        for dir in missing.into_iter().rev() {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, &dir, std::io::empty())
                .expect("tar dir");
        }
        let mut h = header(
            tar::EntryType::Regular,
            file.mode,
            file.contents.len() as u64,
        );
        tar.append_data(&mut h, path, file.contents.as_slice())
            .expect("tar file");
    }
    tar.into_inner().expect("finish tar")
}
