//! An HTTP/1.1 response read off a raw socket, for tests that must see exactly what the proxy
//! or the admin API wrote.

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// Parses a response head (status line and header lines); the body is left empty.
    pub fn from_head(head: &str) -> Reply {
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header line {l:?}"));
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        Reply {
            status,
            headers,
            body: String::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `(status, x-proxy-error, x-proxy-reason)`: what a denial is judged by.
    pub fn verdict(&self) -> (u16, Option<&str>, Option<&str>) {
        (
            self.status,
            self.header("x-proxy-error"),
            self.header("x-proxy-reason"),
        )
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")
            .map(|v| v.parse().expect("numeric Content-Length"))
    }
}
