//! A scripted HTTP server on 127.0.0.1:0: it answers requests, in arrival order, with canned
//! replies (the first one left that is for any method or the request's) and records what it
//! received. For failures no emulator produces.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A canned reply.
#[derive(Debug, Clone)]
pub struct Reply {
    method: Option<String>,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    pub fn new(status: u16, body: &str) -> Reply {
        Reply {
            method: None,
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Keeps this reply for a request with `method`.
    pub fn only_for(mut self, method: &str) -> Reply {
        self.method = Some(method.to_string());
        self
    }
}

/// A request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// The running server.
#[derive(Debug, Clone)]
pub struct Script {
    pub endpoint: String,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Script {
    /// Serves `replies`, one per request; a request past the end gets a 418.
    pub async fn serve(replies: Vec<Reply>) -> Script {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let script = Script {
            endpoint: format!("http://{}", listener.local_addr().unwrap()),
            replies: Arc::new(Mutex::new(replies.into())),
            requests: Arc::default(),
        };
        let server = script.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(server.clone().connection(stream));
            }
        });
        script
    }

    /// What was received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn next_reply(&self, method: &str) -> Reply {
        let mut replies = self.replies.lock().unwrap();
        replies
            .iter()
            .position(|reply| reply.method.as_deref().is_none_or(|m| m == method))
            .and_then(|index| replies.remove(index))
            .unwrap_or_else(|| Reply::new(418, "script exhausted"))
    }

    async fn connection(self, stream: TcpStream) {
        let mut stream = BufReader::new(stream);
        while let Some(request) = read_request(&mut stream).await {
            let reply = self.next_reply(&request.method);
            self.requests.lock().unwrap().push(request);
            if stream.write_all(&encode(&reply)).await.is_err() {
                return;
            }
        }
    }
}

async fn read_request(stream: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    stream.read_line(&mut line).await.ok().filter(|n| *n > 0)?;
    let mut words = line.split_whitespace();
    let method = words.next()?.to_string();
    let target = words.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await.ok()?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    let length: usize = request
        .header("content-length")
        .map_or(0, |value| value.parse().unwrap());
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(Request { body, ..request })
}

fn encode(reply: &Reply) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {} Scripted\r\n", reply.status);
    for (name, value) in &reply.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n\r\n", reply.body.len());
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(reply.body.as_bytes());
    bytes
}
