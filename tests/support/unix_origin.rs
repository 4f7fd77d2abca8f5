//! An HTTP/1.1 origin on a Unix socket that records what reached it, for `x-unix-socket` tests.
//! It runs on its own threads and stops with the process; the socket file goes with the test's
//! temporary directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

/// Answers every request with `200` and `unix origin saw <METHOD> <target> body=<n bytes>`
/// (Content-Length bodies only), keeping the connection alive.
pub struct UnixHttpOrigin {
    pub path: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
}

impl UnixHttpOrigin {
    pub fn start(path: &Path) -> UnixHttpOrigin {
        let listener = UnixListener::bind(path).expect("bind the Unix origin");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = Arc::clone(&requests);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let reqs = Arc::clone(&reqs);
                thread::spawn(move || serve(stream, &reqs));
            }
        });
        UnixHttpOrigin {
            path: path.to_path_buf(),
            requests,
        }
    }

    /// Every request head seen so far (request line and headers, `\r\n`-joined).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

fn serve(stream: UnixStream, requests: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if line.is_empty() {
                break;
            }
            head.push(line);
        }
        let length: usize = head
            .iter()
            .skip(1)
            .find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = head[0].split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let body = format!("unix origin saw {method} {target} body={length}");
        requests.lock().unwrap().push(head.join("\r\n"));
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{}",
            body.len(),
            body
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
