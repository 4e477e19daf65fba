//! `session-router --probe URL`: one plain-HTTP GET that succeeds only on a 200 answer. It is
//! the container image's health check, which has no curl in a distroless runtime.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use http::Uri;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("`{0}` is not an http:// URL with a host")]
    BadUrl(String),
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the answer is not HTTP")]
    NotHttp,
    #[error("answered {0}")]
    Status(u16),
}

/// Largest response head read; the admin answers are a few hundred bytes.
const MAX_HEAD: usize = 8192;

/// GETs `url` within `timeout` per step (connect, write, each read) and succeeds on 200.
pub fn probe(url: &str, timeout: Duration) -> Result<(), ProbeError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| ProbeError::BadUrl(url.to_owned()))?;
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(ProbeError::BadUrl(url.to_owned()));
    };
    let port = authority.port_u16().unwrap_or(80);
    let addr = (authority.host(), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| ProbeError::Resolve(authority.to_string()))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());

    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: a request sent in pieces can meet a server that answers after the first one.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: session-router-probe\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;

    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 || head.len() >= MAX_HEAD {
            return Err(ProbeError::NotHttp);
        }
        head.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                return match resp.code {
                    Some(200) => Ok(()),
                    Some(code) => Err(ProbeError::Status(code)),
                    None => Err(ProbeError::NotHttp),
                };
            }
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err(ProbeError::NotHttp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves one connection with a canned answer and returns the request it read.
    fn answer_once(reply: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/readyz", listener.local_addr().expect("addr"));
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut req = Vec::new();
            let mut chunk = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut chunk).expect("read");
                assert!(n > 0, "request ended early: {req:?}");
                req.extend_from_slice(&chunk[..n]);
            }
            s.write_all(reply).expect("write");
            String::from_utf8_lossy(&req).into_owned()
        });
        (url, server)
    }

    #[test]
    fn succeeds_on_200_only() {
        let (url, server) = answer_once(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nready\n");
        probe(&url, Duration::from_secs(2)).expect("200 is healthy");
        let req = server.join().expect("server");
        assert!(req.starts_with("GET /readyz HTTP/1.1\r\n"), "{req}");

        let (url, server) = answer_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert!(matches!(
            probe(&url, Duration::from_secs(2)),
            Err(ProbeError::Status(503))
        ));
        server.join().expect("server");
    }

    #[test]
    fn refuses_what_it_cannot_probe() {
        for url in ["https://127.0.0.1/readyz", "/readyz", "not a url"] {
            assert!(
                matches!(
                    probe(url, Duration::from_millis(100)),
                    Err(ProbeError::BadUrl(_))
                ),
                "{url}"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let closed = format!("http://127.0.0.1:{port}/readyz");
        assert!(matches!(
            probe(&closed, Duration::from_millis(500)),
            Err(ProbeError::Io(_))
        ));
    }
}
