//! Test helpers: crafted layer tars, a local `docker-registry`, images
//! pushed to it with oci-client, and a store in a temp dir. The lead's
//! shared fixture in `tests/` replaces the registry part end to end.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use pier_storage::digest::Digest;
use pier_storage::{Database, ImageStore, StoreConfig};
use tar::{EntryType, Header};

/// Builds a layer tar entry by entry, with raw names so that tests can
/// write what a well-behaved tar writer would refuse (`..`, absolute paths).
pub struct TarLayer {
    out: Vec<u8>,
}

impl Default for TarLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl TarLayer {
    pub fn new() -> Self {
        Self { out: Vec::new() }
    }

    fn header(name: &[u8], kind: EntryType, size: u64, mode: u32, link: Option<&[u8]>) -> Header {
        let mut h = Header::new_gnu();
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.name[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            gnu.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        h
    }

    pub fn raw(&mut self, mut header: Header, data: &[u8]) -> &mut Self {
        header.set_cksum();
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn header_for(name: &str, kind: EntryType, size: u64, mode: u32) -> Header {
        Self::header(name.as_bytes(), kind, size, mode, None)
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        let h = Self::header(
            name.as_bytes(),
            EntryType::Regular,
            data.len() as u64,
            0o644,
            None,
        );
        self.raw(h, data)
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        let h = Self::header(name.as_bytes(), EntryType::Directory, 0, 0o755, None);
        self.raw(h, &[])
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = Self::header(
            name.as_bytes(),
            EntryType::Symlink,
            0,
            0o777,
            Some(target.as_bytes()),
        );
        self.raw(h, &[])
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = Self::header(
            name.as_bytes(),
            EntryType::Link,
            0,
            0o644,
            Some(target.as_bytes()),
        );
        self.raw(h, &[])
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = 1 + key.len() + 1 + value.len() + 1; // ' ' key '=' value '\n'
            let mut len = body + 1;
            while len.to_string().len() + body != len {
                len = len.to_string().len() + body;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let h = Self::header(
            b"././@PaxHeader",
            EntryType::XHeader,
            data.len() as u64,
            0o644,
            None,
        );
        self.raw(h, &data)
    }

    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.out.clone();
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 1).unwrap()
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A layer as pushed: its blob, media type and diff id.
#[derive(Clone)]
pub struct Blob {
    pub data: Vec<u8>,
    pub media_type: &'static str,
    pub diff_id: String,
}

impl Blob {
    pub fn gzip(tar: &[u8]) -> Self {
        Self {
            data: gzip(tar),
            media_type: LAYER_GZIP,
            diff_id: Digest::of(tar).to_string(),
        }
    }
    pub fn zstd(tar: &[u8]) -> Self {
        Self {
            data: zstd(tar),
            media_type: LAYER_ZSTD,
            diff_id: Digest::of(tar).to_string(),
        }
    }
    pub fn plain(tar: &[u8]) -> Self {
        Self {
            data: tar.to_vec(),
            media_type: LAYER_TAR,
            diff_id: Digest::of(tar).to_string(),
        }
    }
    pub fn digest(&self) -> String {
        Digest::of(&self.data).to_string()
    }
}

pub fn config_json(diff_ids: &[String], arch: &str, user: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "User": user,
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
            "ExposedPorts": {"8080/tcp": {}},
            "StopSignal": "SIGTERM"
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": Digest::of(data).to_string(),
        "size": data.len(),
    })
}

/// A `docker-registry` on a free 127.0.0.1 port, killed on drop.
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub auth: Option<(String, String)>,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with_auth(None)
    }

    pub fn start_with_auth(auth: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, pass)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .unwrap();
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: pier-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let config = dir.path().join("config.yml");
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Self {
            child,
            dir,
            port,
            auth: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many times the registry served this blob.
    pub fn blob_gets(&self, digest: &str) -> usize {
        if std::env::var_os("PIER_TEST_DUMP_LOG").is_some() {
            eprintln!(
                "{}",
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap()
            );
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("http.request.method=GET"))
            .filter(|l| l.contains(&format!("/blobs/{digest}\"")))
            .filter(|l| l.contains("http.response.status=200"))
            .count()
    }

    /// The file the registry stores a blob in, for corrupting it.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn client(&self) -> (Client, RegistryAuth) {
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        let auth = match &self.auth {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        };
        (client, auth)
    }

    async fn push_blobs(&self, reference: &Reference, blobs: &[&[u8]]) {
        let (client, auth) = self.client();
        client
            .auth(reference, &auth, oci_client::RegistryOperation::Push)
            .await
            .unwrap();
        for data in blobs {
            let digest = Digest::of(data).to_string();
            client
                .push_blob(reference, data.to_vec(), &digest)
                .await
                .unwrap();
        }
    }

    async fn push_manifest(
        &self,
        reference: &Reference,
        media_type: &str,
        body: Vec<u8>,
    ) -> String {
        let (client, auth) = self.client();
        client
            .auth(reference, &auth, oci_client::RegistryOperation::Push)
            .await
            .unwrap();
        client
            .push_manifest_raw(reference, body.clone(), media_type.parse().unwrap())
            .await
            .unwrap();
        Digest::of(&body).to_string()
    }

    /// Pushes an image (OCI media types unless `docker`) as
    /// `<host>/<repo_tag>`; returns (manifest digest, image id).
    pub async fn push_image(
        &self,
        repo_tag: &str,
        layers: &[Blob],
        config: &[u8],
        docker: bool,
    ) -> (String, String) {
        let reference: Reference = format!("{}/{repo_tag}", self.host()).parse().unwrap();
        let mut all: Vec<&[u8]> = layers.iter().map(|b| b.data.as_slice()).collect();
        all.push(config);
        self.push_blobs(&reference, &all).await;
        let (manifest_type, config_type) = if docker {
            (DOCKER_MANIFEST, DOCKER_CONFIG)
        } else {
            (OCI_MANIFEST, OCI_CONFIG)
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": descriptor(config_type, config),
            "layers": layers.iter().map(|b| descriptor(
                if docker { DOCKER_LAYER } else { b.media_type }, &b.data)).collect::<Vec<_>>(),
        });
        let body = serde_json::to_vec(&manifest).unwrap();
        let digest = self.push_manifest(&reference, manifest_type, body).await;
        (digest, Digest::of(config).to_string())
    }

    /// Pushes an index over already pushed manifests: (digest, size, arch).
    pub async fn push_index(&self, repo_tag: &str, entries: &[(String, usize, &str)]) -> String {
        let reference: Reference = format!("{}/{repo_tag}", self.host()).parse().unwrap();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries.iter().map(|(d, s, arch)| serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": d, "size": s,
                "platform": {"os": "linux", "architecture": arch},
            })).collect::<Vec<_>>(),
        });
        self.push_manifest(&reference, OCI_INDEX, serde_json::to_vec(&index).unwrap())
            .await
    }

    /// Size of a stored manifest (for index entries).
    pub fn manifest_size(&self, digest: &str) -> usize {
        std::fs::metadata(self.blob_file(digest)).unwrap().len() as usize
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A store and database in a temp dir; unmounts anything left under it.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub db: Arc<Mutex<Database>>,
    pub store: ImageStore,
    pub config: StoreConfig,
}

impl TestStore {
    pub async fn new(insecure: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::new(dir.path().join("root"));
        config.registry.insecure = insecure.to_vec();
        Self::with_config(dir, config).await
    }

    pub async fn with_config(dir: tempfile::TempDir, config: StoreConfig) -> Self {
        let db = Database::open(&dir.path().join("pier.db")).unwrap();
        let db = Arc::new(Mutex::new(db));
        let store = ImageStore::open(config.clone(), db.clone()).await.unwrap();
        Self {
            dir,
            db,
            store,
            config,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.config.root.clone()
    }

    /// Opens the store again on the same root and database, as after a restart.
    pub async fn reopen(&mut self) {
        self.store = ImageStore::open(self.config.clone(), self.db.clone())
            .await
            .unwrap();
    }

    pub fn layer_dirs(&self) -> Vec<String> {
        list_dir(&self.root().join("layers"))
    }
}

pub fn list_dir(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

impl Drop for TestStore {
    fn drop(&mut self) {
        unmount_under(self.dir.path());
    }
}

pub fn unmount_under(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}
