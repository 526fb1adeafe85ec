//! OCI images built from `/bin/busybox` and pushed to a test registry.
//! Layers are deterministic (fixed mtimes and owners), so the same spec
//! always gives the same digests.

use std::collections::BTreeMap;

use flate2::Compression;
use flate2::write::GzEncoder;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Registry;

const BUSYBOX: &str = "/bin/busybox";
const MTIME: u64 = 1_700_000_000;
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

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
    /// Layers stacked on top, after the one with `files`.
    pub layers: Vec<Layer>,
    /// The config's `architecture` (the host's by default).
    pub architecture: String,
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
            layers: Vec::new(),
            architecture: host_architecture().into(),
        }
    }
}

/// The host's architecture as image configs and indexes name it.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
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
    pub manifest_size: usize,
    /// The config digest, which is the image id the CRI reports.
    pub id: String,
}

impl PushedImage {
    /// `127.0.0.1:<port>/<repo>` without tag.
    pub fn repository(&self) -> &str {
        self.reference
            .rsplit_once(':')
            .map_or(self.reference.as_str(), |(repo, _)| repo)
    }
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
    /// Stacks a layer on top of the image.
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }
    pub fn architecture(mut self, architecture: &str) -> Self {
        self.architecture = architecture.into();
        self
    }

    /// Builds the layers (busybox base, plus one for extra files) and the config.
    pub fn build(&self) -> BuiltImage {
        let mut tars = vec![base_layer()];
        if !self.files.is_empty() {
            tars.push(files_layer(&self.files));
        }
        tars.extend(self.layers.iter().map(Layer::tar));
        let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
        let layers = tars.iter().map(|t| gzip(t)).collect();
        let exposed: serde_json::Map<String, serde_json::Value> = self
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), json!({})))
            .collect();
        let config = json!({
            "architecture": self.architecture,
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
        let mut blobs: Vec<&[u8]> = built.layers.iter().map(Vec::as_slice).collect();
        blobs.push(&built.config);
        let pusher = Pusher::new(registry, &reference).await;
        pusher.blobs(&blobs).await;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": descriptor(CONFIG_MEDIA_TYPE, &built.config),
            "layers": built.layers.iter()
                .map(|l| descriptor(LAYER_MEDIA_TYPE, l)).collect::<Vec<_>>(),
        });
        let manifest = manifest.to_string().into_bytes();
        pusher.manifest(MANIFEST_MEDIA_TYPE, &manifest).await;
        PushedImage {
            reference,
            manifest_digest: sha256(&manifest),
            manifest_size: manifest.len(),
            id: sha256(&built.config),
        }
    }
}

/// Pushes an image made of `layers` as they are: each a compressed blob
/// and the diff id (digest of its uncompressed tar) the config lists for it.
/// For layers no [`ImageSpec`] builds, such as a decompression bomb.
pub async fn push_layers(
    registry: &Registry,
    repo_tag: &str,
    layers: &[(Vec<u8>, String)],
) -> PushedImage {
    let reference = format!("{}/{repo_tag}", registry.host());
    let diff_ids: Vec<&str> = layers.iter().map(|(_, d)| d.as_str()).collect();
    let config = json!({
        "architecture": host_architecture(),
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    })
    .to_string()
    .into_bytes();
    let mut blobs: Vec<&[u8]> = layers.iter().map(|(blob, _)| blob.as_slice()).collect();
    blobs.push(&config);
    let pusher = Pusher::new(registry, &reference).await;
    pusher.blobs(&blobs).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(CONFIG_MEDIA_TYPE, &config),
        "layers": layers.iter()
            .map(|(blob, _)| descriptor(LAYER_MEDIA_TYPE, blob)).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes();
    pusher.manifest(MANIFEST_MEDIA_TYPE, &manifest).await;
    PushedImage {
        reference,
        manifest_digest: sha256(&manifest),
        manifest_size: manifest.len(),
        id: sha256(&config),
    }
}

/// Pushes an OCI index over images already pushed to the same repository,
/// each with the platform (`os/architecture`) it is listed for.
pub async fn push_index(
    registry: &Registry,
    repo_tag: &str,
    entries: &[(&PushedImage, &str)],
) -> PushedImage {
    let reference = format!("{}/{repo_tag}", registry.host());
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(image, platform)| {
            let (os, architecture) = platform.split_once('/').expect("os/architecture");
            json!({
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": image.manifest_digest,
                "size": image.manifest_size,
                "platform": {"os": os, "architecture": architecture},
            })
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests});
    let index = index.to_string().into_bytes();
    Pusher::new(registry, &reference)
        .await
        .manifest(INDEX_MEDIA_TYPE, &index)
        .await;
    PushedImage {
        reference,
        manifest_digest: sha256(&index),
        manifest_size: index.len(),
        id: String::new(),
    }
}

fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": sha256(data), "size": data.len()})
}

/// An authenticated oci-client for pushing to one repository.
struct Pusher {
    client: Client,
    reference: Reference,
}

impl Pusher {
    async fn new(registry: &Registry, reference: &str) -> Self {
        let client = plain_http_client();
        let parsed: Reference = reference.parse().expect("test image reference");
        client
            .auth(&parsed, &registry.push_auth(), RegistryOperation::Push)
            .await
            .unwrap_or_else(|e| panic!("authenticate to push {reference}: {e}"));
        Self {
            client,
            reference: parsed,
        }
    }

    async fn blobs(&self, blobs: &[&[u8]]) {
        for data in blobs {
            self.client
                .push_blob(&self.reference, data.to_vec(), &sha256(data))
                .await
                .unwrap_or_else(|e| panic!("push a blob to {}: {e}", self.reference));
        }
    }

    async fn manifest(&self, media_type: &str, body: &[u8]) {
        self.client
            .push_manifest_raw(
                &self.reference,
                body.to_vec(),
                media_type.parse().expect("media type header"),
            )
            .await
            .unwrap_or_else(|e| panic!("push manifest {}: {e}", self.reference));
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

/// One entry of a [`Layer`].
#[derive(Debug, Clone)]
enum Entry {
    Dir(String),
    File(String, Vec<u8>),
    HardLink(String, String),
    Symlink(String, String),
}

/// A layer built entry by entry: files, links, and the whiteouts that hide
/// what lower layers have. Parent directories are added as needed.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    entries: Vec<Entry>,
}

impl Layer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn dir(mut self, path: &str) -> Self {
        self.entries.push(Entry::Dir(path.into()));
        self
    }
    pub fn file(mut self, path: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.entries.push(Entry::File(path.into(), contents.into()));
        self
    }
    /// `path` as a hard link to `target`, an earlier entry of this layer.
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.entries
            .push(Entry::HardLink(path.into(), target.into()));
        self
    }
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries
            .push(Entry::Symlink(path.into(), target.into()));
        self
    }
    /// Deletes `path` of the layers below (a `.wh.<name>` entry).
    pub fn whiteout(self, path: &str) -> Self {
        let path = path.trim_start_matches('/');
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let marker = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&marker, Vec::new())
    }
    /// Hides everything the layers below have in `dir` (`.wh..wh..opq`).
    pub fn opaque(self, dir: &str) -> Self {
        let dir = dir.trim_matches('/');
        self.dir(dir)
            .file(&format!("{dir}/.wh..wh..opq"), Vec::new())
    }

    fn tar(&self) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        let mut add_dir = |tar: &mut tar::Builder<Vec<u8>>, dir: &std::path::Path| {
            let mut missing = Vec::new();
            let mut next = Some(dir);
            while let Some(d) = next.filter(|d| !d.as_os_str().is_empty()) {
                if dirs.insert(d.to_owned()) {
                    missing.push(d.to_owned());
                }
                next = d.parent();
            }
            for d in missing.into_iter().rev() {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                tar.append_data(&mut h, &d, std::io::empty())
                    .expect("tar dir");
            }
        };
        for entry in &self.entries {
            let path = match entry {
                Entry::Dir(p)
                | Entry::File(p, _)
                | Entry::HardLink(p, _)
                | Entry::Symlink(p, _) => std::path::Path::new(p.trim_start_matches('/')),
            };
            if let Some(parent) = path.parent() {
                add_dir(&mut tar, parent);
            }
            match entry {
                Entry::Dir(_) => add_dir(&mut tar, path),
                Entry::File(_, contents) => {
                    let mut h = header(tar::EntryType::Regular, 0o644, contents.len() as u64);
                    tar.append_data(&mut h, path, contents.as_slice())
                        .expect("tar file");
                }
                Entry::HardLink(_, target) => {
                    let mut h = header(tar::EntryType::Link, 0o644, 0);
                    tar.append_link(&mut h, path, target.trim_start_matches('/'))
                        .expect("tar hard link");
                }
                Entry::Symlink(_, target) => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                    tar.append_link(&mut h, path, target).expect("tar symlink");
                }
            }
        }
        tar.into_inner().expect("finish tar")
    }
}
