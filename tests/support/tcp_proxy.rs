//! A TCP proxy for tests: forwards connections from a 127.0.0.1 port to a
//! target, and can go away (every connection cut, the port closed) and come
//! back on the same port, as a broker that is killed and restarted does
//! from its clients' side.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub struct TcpProxy {
    port: u16,
    target: String,
    running: Option<Running>,
}

struct Running {
    stopped: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: JoinHandle<()>,
}

impl TcpProxy {
    /// A proxy on `port` to `target` (`host:port`).
    pub fn start(port: u16, target: &str) -> Self {
        let mut proxy = Self {
            port,
            target: target.to_string(),
            running: None,
        };
        proxy.come_back();
        proxy
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Cuts every connection and closes the port.
    pub fn go_away(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        running.stopped.store(true, Ordering::SeqCst);
        // Wakes the acceptor, which then sees `stopped`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        let _ = running.acceptor.join();
        for connection in running.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }

    /// Listens on the same port again.
    pub fn come_back(&mut self) {
        assert!(self.running.is_none(), "the proxy is already up");
        // std sets SO_REUSEADDR, so the port is free again at once.
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("the proxy's port");
        let stopped = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let acceptor = std::thread::spawn({
            let stopped = Arc::clone(&stopped);
            let connections = Arc::clone(&connections);
            let target = self.target.clone();
            move || {
                for client in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(&target) else {
                        continue;
                    };
                    let mut all = connections.lock().unwrap();
                    all.push(client.try_clone().unwrap());
                    all.push(server.try_clone().unwrap());
                    drop(all);
                    pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                    pipe(server, client);
                }
            }
        });
        self.running = Some(Running {
            stopped,
            connections,
            acceptor,
        });
    }
}

/// Copies `from` to `to` until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.go_away();
    }
}
