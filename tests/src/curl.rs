//! Plain HTTP over the real `curl` binary, as operators' scripts talk to a
//! member: `curl -i`, then the status line, headers and body split apart.

use std::process::{Command, Stdio};

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Runs `cmd` (a `curl -i ...` without its URL) on `url` and splits what
/// came back; a `100 Continue` before the answer is skipped.
pub fn run(mut cmd: Command, url: &str) -> Reply {
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("curl must be installed");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    while text.starts_with("HTTP/1.1 100") {
        text = text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, r)| r.to_string());
    }
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response from {url}: {text:?} {:?}", out.stderr));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}
