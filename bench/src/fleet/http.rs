//! A small blocking HTTP/1.1 client over a stream the caller connected (inside a
//! namespace, see [`super::net::connect`]): one request per connection, bodies read as
//! they arrive (content-length, chunked, or up to the close), so a caller can follow a
//! long download or a job's progress lines.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use anyhow::{Context, bail};

/// An answer whose body is still to be read.
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    body: Body,
}

enum Body {
    Length(std::io::Take<BufReader<TcpStream>>),
    Chunked(Chunked),
    Close(BufReader<TcpStream>),
}

impl Response {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as a reader.
    pub fn body(&mut self) -> &mut dyn Read {
        match &mut self.body {
            Body::Length(r) => r,
            Body::Chunked(r) => r,
            Body::Close(r) => r,
        }
    }

    /// The whole body, failing unless the status is 2xx.
    pub fn into_ok_bytes(mut self, what: &str) -> anyhow::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.body().read_to_end(&mut v)?;
        if !(200..300).contains(&self.status) {
            bail!(
                "{what}: HTTP {}: {}",
                self.status,
                String::from_utf8_lossy(&v[..v.len().min(500)])
            );
        }
        Ok(v)
    }
}

/// Sends `method path` with `headers` on `stream` and reads the answer's head.
pub fn request(
    stream: TcpStream,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: shoal-bench\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    (&stream).write_all(head.as_bytes())?;
    let mut reader = BufReader::with_capacity(256 << 10, stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} {path}: no HTTP status line: {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("{method} {path}: the connection closed inside the headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        Body::Chunked(Chunked {
            inner: reader,
            left: 0,
            done: false,
        })
    } else if let Some(n) = find("content-length").and_then(|v| v.parse::<u64>().ok()) {
        Body::Length(reader.take(n))
    } else {
        Body::Close(reader)
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `Transfer-Encoding: chunked`, decoded.
struct Chunked {
    inner: BufReader<TcpStream>,
    left: u64,
    done: bool,
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            let size = line.trim().split(';').next().unwrap_or_default();
            self.left = u64::from_str_radix(size, 16).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad chunk size {line:?}"),
                )
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

/// `s` percent-encoded for a query value.
pub fn query_value(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
