//! A TCP proxy a test can cut: the way to cut one node off from a service (ZooKeeper) while the
//! rest of the cluster still reaches it, without root or firewall rules.
//!
//! ```no_run
//! use lathe_tests::proxy::TcpProxy;
//!
//! let proxy = TcpProxy::start("127.0.0.1:2181");
//! // point a node at proxy.addr() instead of 127.0.0.1:2181 ...
//! proxy.cut(); // every open connection closes; new ones are closed as soon as accepted
//! proxy.restore(); // new connections go through again
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Shared {
    cut: AtomicBool,
    stopped: AtomicBool,
    /// Both sockets of every connection passed through, to shut them down on `cut`.
    open: Mutex<Vec<TcpStream>>,
}

/// Forwards every connection to its loopback port to `target`, until cut or dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `target` (`HOST:PORT`).
    pub fn start(target: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let target: SocketAddr = target
            .parse()
            .unwrap_or_else(|e| panic!("proxy target {target:?}: {e}"));
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        thread::spawn(move || accept_loop(listener, target, accepting));
        TcpProxy { addr, shared }
    }

    /// `127.0.0.1:PORT`: where clients connect instead of the target.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Closes every open connection and closes new ones as soon as they are accepted.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        close_all(&self.shared);
    }

    /// Lets new connections through again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.cut.store(true, Ordering::SeqCst);
        close_all(&self.shared);
        // Wake the accept loop so it sees `stopped`.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
    }
}

fn close_all(shared: &Shared) {
    let open = std::mem::take(&mut *shared.open.lock().unwrap_or_else(|e| e.into_inner()));
    for stream in open {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let clones = (client.try_clone(), server.try_clone());
        let (Ok(client_back), Ok(server_back)) = clones else {
            continue;
        };
        {
            let mut open = shared.open.lock().unwrap_or_else(|e| e.into_inner());
            for stream in [&client, &server] {
                if let Ok(stream) = stream.try_clone() {
                    open.push(stream);
                }
            }
        }
        thread::spawn(move || pipe(client, server));
        thread::spawn(move || pipe(server_back, client_back));
    }
}

/// Copies `from` to `to` until either side closes, then closes both directions.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
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
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
