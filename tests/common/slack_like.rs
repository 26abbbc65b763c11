//! A real HTTP/1.1 server on 127.0.0.1 that answers like Slack's incoming webhooks:
//! `ok` with 200, 429 with `Retry-After`, 500, and 404 `no_service`; it records every request.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reply {
    Ok,
    RateLimited,
    ServerError,
    NoService,
}

impl Reply {
    fn http(self) -> &'static str {
        match self {
            Reply::Ok => "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            Reply::RateLimited => "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nrate_limited",
            Reply::ServerError => "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: close\r\n\r\ninternal_error",
            Reply::NoService => "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nno_service",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: Value,
    pub at: Instant,
    pub reply: Reply,
}

/// Answers requests with the scripted replies in order, then `ok`, and records them all.
pub struct SlackLike {
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl SlackLike {
    pub async fn start_on(address: SocketAddr, script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind(address).await.unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let log = received.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (log, script) = (log.clone(), script.clone());
                tokio::spawn(async move { answer(stream, log, script).await });
            }
        });
        Self { address, received }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// One request per connection (`Connection: close`), as much HTTP as a webhook client needs.
async fn answer(
    mut stream: TcpStream,
    log: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-request");
        bytes.extend_from_slice(&chunk[..n]);
        if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8(bytes[..header_end].to_vec()).unwrap();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap().to_string();
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse().unwrap())
        .expect("a POST with a body");
    while bytes.len() < header_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        bytes.extend_from_slice(&chunk[..n]);
    }
    let mut parts = request_line.split(' ');
    assert_eq!(parts.next(), Some("POST"));
    let path = parts.next().unwrap().to_string();
    let body = serde_json::from_slice(&bytes[header_end..header_end + length]).unwrap();
    let reply = script.lock().unwrap().pop_front().unwrap_or(Reply::Ok);
    log.lock().unwrap().push(Received {
        path,
        body,
        at: Instant::now(),
        reply,
    });
    stream.write_all(reply.http().as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
}
