//! An HTTP/1.1 origin on a Unix socket that records what reached it, for `x-unix-socket` tests.
//! It runs on its own threads and stops with the process; the socket file goes with the test's
//! temporary directory.

use std::io::BufReader;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use super::origin::serve_http;

/// Answers every request with `200` and `unix origin saw <METHOD> <target> body=<n bytes>`,
/// keeping the connection alive (the same server as [`super::origin::HttpOrigin`]).
pub struct UnixHttpOrigin {
    pub path: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
}

impl UnixHttpOrigin {
    pub fn start(path: &Path) -> UnixHttpOrigin {
        let listener = UnixListener::bind(path).expect("bind the Unix origin");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = Arc::clone(&requests);
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                accepted.fetch_add(1, Ordering::SeqCst);
                let reqs = Arc::clone(&reqs);
                thread::spawn(move || {
                    let reader = BufReader::new(stream.try_clone().unwrap());
                    serve_http(reader, stream, "unix origin", &reqs)
                });
            }
        });
        UnixHttpOrigin {
            path: path.to_path_buf(),
            requests,
            connections,
        }
    }

    /// Every request head seen so far (request line and headers, `\r\n`-joined).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Connections accepted so far, whether or not a request followed.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}
