//! When a Director request is sent again: idempotent requests (GETs: reads and task polls) that
//! met a 5xx from the Director's nginx or Puma, a reset or dropped connection, or a timeout are
//! retried with exponential backoff and jitter, within a number of attempts and a total time.
//!
//! A POST (an SSH `setup` or `cleanup`) is never sent again here: the Director may have started
//! its task before the answer was lost, and a second task would act twice. The SSH setup of a
//! deployment run has its own rule (`target`): it is tried again only after a cleanup of the
//! same user. Other 4xx answers, a refused certificate and an answer that does not parse are
//! never retried: sending them again would fail the same way.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::Method;

/// How often and how long idempotent Director requests are tried
/// (`--director-retry-attempts`, `--director-retry-total`, `[director]` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (1: no retry).
    pub attempts: u32,
    /// No retry starts once this much time has passed since the first attempt.
    pub total: Duration,
    /// The pause before the first retry; it doubles for each further one.
    pub first_pause: Duration,
    /// The longest pause between two attempts.
    pub max_pause: Duration,
}

impl RetryPolicy {
    /// Default attempts: the first and four retries.
    pub const DEFAULT_ATTEMPTS: u32 = 5;
    /// Default total time: a Director restart (monit brings it back within a minute) fits.
    pub const DEFAULT_TOTAL: Duration = Duration::from_mins(2);

    /// The pause before retry number `retry` (1 for the first): half of the doubling step
    /// (`first_pause`, `2 × first_pause`, ... capped at `max_pause`) plus up to as much again,
    /// drawn from `jitter` in `[0, 1)` ("equal jitter"), so clients that failed together do
    /// not come back together.
    #[must_use]
    pub fn pause(&self, retry: u32, jitter: f64) -> Duration {
        let doublings = retry.saturating_sub(1).min(20);
        let step = self
            .first_pause
            .saturating_mul(1 << doublings)
            .min(self.max_pause);
        let half = step / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: RetryPolicy::DEFAULT_ATTEMPTS,
            total: RetryPolicy::DEFAULT_TOTAL,
            first_pause: Duration::from_millis(500),
            max_pause: Duration::from_secs(10),
        }
    }
}

/// Why an attempt is worth repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transient {
    /// 500, 502, 503 or 504: the Director (or its nginx) is restarting or overloaded.
    Status(u16),
    /// No answer in time.
    Timeout,
    /// The connection was reset or closed before the whole answer arrived.
    ConnectionLost,
    /// Nothing listens (yet): the Director is restarting.
    Refused,
}

impl fmt::Display for Transient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transient::Status(status) => write!(f, "status {status}"),
            Transient::Timeout => f.write_str("timed out"),
            Transient::ConnectionLost => f.write_str("connection lost"),
            Transient::Refused => f.write_str("connection refused"),
        }
    }
}

/// Requests that may be sent again: the ones that change nothing (GET, HEAD). The Director's
/// POSTs start tasks, and its PUTs and DELETEs are never sent by Cairn; none is retried.
#[must_use]
pub fn is_idempotent(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

/// The statuses a retry can cure: 500 (Puma's unhandled error during a restart), 502 and 504
/// (nginx in front of a Director that is down or slow), 503. 501 and 505 would fail again.
#[must_use]
pub fn transient_status(status: u16) -> Option<Transient> {
    matches!(status, 500 | 502 | 503 | 504).then_some(Transient::Status(status))
}

/// The transport failures a retry can cure: timeouts, refused, reset or dropped connections
/// (also mid-body). A TLS failure (a certificate not signed by `--ca-cert`), a bad URL or a
/// body that is not JSON would fail again.
#[must_use]
pub fn transient_error(error: &reqwest::Error) -> Option<Transient> {
    if error.is_timeout() {
        return Some(Transient::Timeout);
    }
    if error.is_builder() || error.is_redirect() {
        return None;
    }
    // A body cut short comes back as a decode error too (reqwest 0.13), so the causes decide;
    // a body that arrived whole but is not JSON has no io error among them.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            match io.kind() {
                ErrorKind::TimedOut => return Some(Transient::Timeout),
                ErrorKind::ConnectionRefused => return Some(Transient::Refused),
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
                | ErrorKind::NotConnected => return Some(Transient::ConnectionLost),
                // A refused certificate, for one, is an InvalidData io error: not transient.
                _ => return None,
            }
        }
        // hyper's "connection closed before message completed" has no io error inside.
        if cause.to_string().contains("connection closed") {
            return Some(Transient::ConnectionLost);
        }
        source = cause.source();
    }
    // A body cut short without an io error to tell why.
    (error.is_body() && !error.is_decode()).then_some(Transient::ConnectionLost)
}

/// The attempts at one request: counts them and says whether, and after which pause, the next
/// one may start.
#[derive(Debug)]
pub struct Attempts {
    policy: RetryPolicy,
    started: Instant,
    made: u32,
}

impl Attempts {
    /// The first attempt is about to be made.
    #[must_use]
    pub fn start(policy: RetryPolicy) -> Attempts {
        Attempts {
            policy,
            started: Instant::now(),
            made: 1,
        }
    }

    /// Attempts made so far.
    #[must_use]
    pub fn made(&self) -> u32 {
        self.made
    }

    /// After a failed attempt: the pause before the next one, or `None` when the attempts or
    /// the total time are used up (a retry that would start after the total time is not made).
    pub fn next_pause(&mut self) -> Option<Duration> {
        self.next_with(rand::random::<f64>(), self.started.elapsed())
    }

    fn next_with(&mut self, jitter: f64, elapsed: Duration) -> Option<Duration> {
        if self.made >= self.policy.attempts {
            return None;
        }
        let pause = self.policy.pause(self.made, jitter);
        if elapsed + pause > self.policy.total {
            return None;
        }
        self.made += 1;
        Some(pause)
    }

    /// `; gave up after N attempts in T s` when the request was retried, for error messages.
    #[must_use]
    pub fn summary(&self) -> String {
        if self.made <= 1 {
            return String::new();
        }
        format!(
            " (gave up after {} attempts in {:.1} s; see --director-retry-attempts and --director-retry-total)",
            self.made,
            self.started.elapsed().as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, total: Duration) -> RetryPolicy {
        RetryPolicy {
            attempts,
            total,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn only_requests_that_change_nothing_are_retried() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::HEAD));
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(!is_idempotent(&method), "{method}");
        }
    }

    #[test]
    fn server_errors_that_a_restart_explains_are_transient() {
        for status in [500, 502, 503, 504] {
            assert_eq!(transient_status(status), Some(Transient::Status(status)));
        }
        for status in [200, 302, 400, 401, 403, 404, 409, 422, 501, 505] {
            assert_eq!(transient_status(status), None, "{status}");
        }
    }

    #[test]
    fn pauses_double_up_to_the_cap_with_jitter_within_the_upper_half() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.pause(1, 0.0), Duration::from_millis(250));
        assert_eq!(policy.pause(1, 0.999_999).as_millis(), 499);
        assert_eq!(policy.pause(2, 0.0), Duration::from_millis(500));
        assert_eq!(policy.pause(3, 0.0), Duration::from_secs(1));
        // Capped at max_pause (10 s): 5 s to 10 s, however many retries came before.
        for retry in [6, 7, 30, u32::MAX] {
            let low = policy.pause(retry, 0.0);
            let high = policy.pause(retry, 1.0);
            assert_eq!(low, Duration::from_secs(5), "{retry}");
            assert_eq!(high, Duration::from_secs(10), "{retry}");
        }
        // Jitter spreads clients: different draws, different pauses.
        assert_ne!(policy.pause(3, 0.1), policy.pause(3, 0.9));
    }

    #[test]
    fn attempts_stop_at_the_limit() {
        let mut attempts = Attempts::start(policy(3, Duration::from_secs(600)));
        assert!(attempts.next_with(0.5, Duration::ZERO).is_some());
        assert!(attempts.next_with(0.5, Duration::ZERO).is_some());
        assert_eq!(attempts.made(), 3);
        assert_eq!(attempts.next_with(0.5, Duration::ZERO), None);
        assert!(attempts.summary().contains("after 3 attempts"));
        let mut once = Attempts::start(policy(1, Duration::from_secs(600)));
        assert_eq!(once.next_with(0.5, Duration::ZERO), None);
        assert_eq!(once.summary(), "");
    }

    #[test]
    fn no_retry_starts_after_the_total_time() {
        let mut attempts = Attempts::start(policy(10, Duration::from_secs(2)));
        // The first pause is at most 0.5 s: fits at 1 s, not at 1.8 s.
        assert!(attempts.next_with(1.0, Duration::from_secs(1)).is_some());
        assert_eq!(attempts.next_with(1.0, Duration::from_millis(1800)), None);
        assert_eq!(attempts.made(), 2);
    }

    /// A local socket that does `serve` with each connection, and a plain-HTTP client of it.
    async fn failing_server<F>(serve: F) -> (String, reqwest::Client)
    where
        F: Fn(tokio::net::TcpStream) + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/info", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                serve(stream);
            }
        });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .no_proxy()
            .build()
            .unwrap();
        (url, client)
    }

    #[tokio::test]
    async fn dropped_reset_refused_and_silent_connections_are_transient() {
        // Closed after reading the request, without an answer.
        let (url, client) = failing_server(|stream| {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut stream = stream;
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                drop(stream);
            });
        })
        .await;
        let error = client.get(&url).send().await.unwrap_err();
        assert_eq!(
            transient_error(&error),
            Some(Transient::ConnectionLost),
            "{error:?}"
        );

        // Reset (SO_LINGER 0).
        let (url, client) = failing_server(|stream| {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut stream = stream;
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream.set_zero_linger();
                drop(stream);
            });
        })
        .await;
        let error = client.get(&url).send().await.unwrap_err();
        assert_eq!(
            transient_error(&error),
            Some(Transient::ConnectionLost),
            "{error:?}"
        );

        // Accepted, never answered: the client's timeout.
        let (url, client) = failing_server(|stream| {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                drop(stream);
            });
        })
        .await;
        let error = client.get(&url).send().await.unwrap_err();
        assert_eq!(
            transient_error(&error),
            Some(Transient::Timeout),
            "{error:?}"
        );

        // A body cut short: the headers promise more than arrives.
        let (url, client) = failing_server(|stream| {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = stream;
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"name\":")
                    .await;
                drop(stream);
            });
        })
        .await;
        let response = client.get(&url).send().await.unwrap();
        let error = response.bytes().await.unwrap_err();
        assert_eq!(
            transient_error(&error),
            Some(Transient::ConnectionLost),
            "{error:?}"
        );

        // Nothing listening.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = free.local_addr().unwrap();
        drop(free);
        let error = reqwest::Client::new()
            .get(format!("http://{address}/info"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            transient_error(&error),
            Some(Transient::Refused),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn answers_that_do_not_parse_are_not_transient() {
        let (url, client) = failing_server(|stream| {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = stream;
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnot j")
                    .await;
            });
        })
        .await;
        let response = client.get(&url).send().await.unwrap();
        let error = response.json::<serde_json::Value>().await.unwrap_err();
        assert_eq!(transient_error(&error), None, "{error:?}");
    }
}
