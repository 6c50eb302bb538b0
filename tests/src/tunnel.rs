//! A TCP tunnel in front of a server (`Tunnel`) that a test can cut, by connection: a
//! connection is known by the path of its first request, so an agent's connections (every
//! one opens with a `/v1/fleet/` route) and its mounts' (metadata and objects) can be cut
//! apart, as a machine off the network or one that reaches only part of it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Which connections are cut, by the path of their first request.
type Cut = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Default)]
struct Inner {
    cut: Option<Cut>,
    /// Open connections: the first request's path, the client's side and the server's.
    open: Vec<(u64, String, TcpStream, TcpStream)>,
    next: u64,
}

/// The tunnel: bytes pass both ways untouched (a stream of events streams) unless cut.
pub struct Tunnel {
    /// `http://127.0.0.1:PORT`, for a client's list of servers.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Tunnel {
    /// A tunnel on a free port in front of `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> Tunnel {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let shared = inner.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let (inner, upstream) = (shared.clone(), upstream.clone());
                std::thread::spawn(move || pass(client, &upstream, &inner));
            }
        });
        Tunnel { url, inner }
    }

    /// From now on, connections whose first request's path `cut` accepts are closed: the open
    /// ones at once, new ones after their first request line (before it reaches the server).
    pub fn cut(&self, cut: impl Fn(&str) -> bool + Send + Sync + 'static) {
        let cut: Cut = Arc::new(cut);
        let mut inner = self.inner.lock().unwrap();
        for (_, path, client, server) in &inner.open {
            if cut(path) {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            }
        }
        inner.open.retain(|(_, path, ..)| !cut(path));
        inner.cut = Some(cut);
    }

    /// Every connection passes again.
    pub fn heal(&self) {
        self.inner.lock().unwrap().cut = None;
    }
}

/// Reads up to the end of the first request line (kept, to be sent on); its path.
fn first_line(client: &mut TcpStream, head: &mut Vec<u8>) -> Option<String> {
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        if head.len() > 8192 || client.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(head).split_whitespace().nth(1).map(String::from)
}

fn pass(mut client: TcpStream, upstream: &str, inner: &Mutex<Inner>) {
    let mut head = Vec::new();
    let Some(path) = first_line(&mut client, &mut head) else { return };
    let Ok(mut server) = TcpStream::connect(upstream) else { return };
    let id = {
        let mut i = inner.lock().unwrap();
        if i.cut.as_ref().is_some_and(|cut| cut(&path)) {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) else { return };
        i.next += 1;
        let id = i.next;
        i.open.push((id, path, c, s));
        id
    };
    if server.write_all(&head).is_ok() {
        let (Ok(mut c), Ok(mut s)) = (client.try_clone(), server.try_clone()) else { return };
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut c, &mut s);
            let _ = s.shutdown(Shutdown::Write);
        });
        let _ = std::io::copy(&mut server, &mut client);
        let _ = client.shutdown(Shutdown::Both);
        let _ = up.join();
    }
    inner.lock().unwrap().open.retain(|(i, ..)| *i != id);
}
