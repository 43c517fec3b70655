//! Notifications (`--notify-url`): at the end of a run, its final event is POSTed to each
//! webhook, so that a chat channel or an alerting system hears of every backup without
//! scraping logs.
//!
//! The body is the run's `run_finished` event exactly as `--json` writes it (one JSON object,
//! schema `cairn.events/1`), or, for a Slack-compatible incoming webhook, `{"text": "…"}` with
//! a one-line summary ([`slack_text`]). The body is signed with HMAC-SHA256 under the secret
//! of `--notify-secret-file`: header `X-Cairn-Signature: sha256=<hex of the MAC over the exact
//! body bytes>` ([`signature`]), as GitHub signs its webhooks, so a receiver can tell Cairn's
//! notifications from anyone else's POSTs; the event's `time` lets it refuse old replays.
//!
//! A notification must never cost the run its result: it is sent after everything else is
//! done (error report, metrics file), every webhook at once, each with at most
//! [`Policy::attempts`] tries of at most [`Policy::timeout`] each and a pause of
//! `backoff`, `2 × backoff`, … between them. So the run ends at most
//! `attempts × timeout + (1 + 2 + …) × backoff` after its work (default: 3 × 10 s + 3 s =
//! 33 s), whatever the webhooks do. What failed comes back as [`NotifyError`]s, one warning
//! line each for the CLI; the exit code is never changed. Only a lost connection, a timeout,
//! 408, 429 and 5xx are tried again: any other answer would be the same the next time.
//! Redirects are not followed (a signed body goes only where it was sent). `HTTPS_PROXY`,
//! `HTTP_PROXY` and `NO_PROXY` are honoured (a jumpbox may reach Slack only through a proxy).
//!
//! Webhook URLs are secrets too (a Slack webhook's path is its credential): errors name the
//! URL's scheme, host and port only ([`redacted`]).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Cairn-Signature";

/// What a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The run's final event, as `--json` writes it.
    Json,
    /// `{"text": "…"}`, a Slack-compatible incoming-webhook message.
    Slack,
}

impl Format {
    /// `json` or `slack`.
    ///
    /// # Errors
    /// Any other word, with the ones accepted.
    pub fn parse(text: &str) -> Result<Format, String> {
        match text {
            "json" => Ok(Format::Json),
            "slack" => Ok(Format::Slack),
            other => Err(format!(
                "`{other}` is not a notification format; use json or slack"
            )),
        }
    }
}

/// One webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Where to POST.
    pub url: reqwest::Url,
    /// What to send.
    pub format: Format,
}

/// How hard to try one webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Tries per webhook, the first included.
    pub attempts: u32,
    /// Time limit of one try (connecting, sending, and the answer's status).
    pub timeout: Duration,
    /// The pause before the second try; each later pause doubles.
    pub backoff: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            attempts: 3,
            timeout: Duration::from_secs(10),
            backoff: Duration::from_secs(1),
        }
    }
}

impl Policy {
    /// The longest a [`Notifier::send`] can take: every try timing out, every pause taken.
    #[must_use]
    pub fn bound(&self) -> Duration {
        let pauses: u32 = (0..self.attempts.saturating_sub(1)).map(|n| 1 << n).sum();
        self.timeout * self.attempts + self.backoff * pauses
    }
}

/// What a run tells its webhooks.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The final event as one JSON line (`events::to_json_line`), the body of [`Format::Json`].
    pub event_line: String,
    /// What the Slack summary says.
    pub summary: Summary,
}

/// The facts of the one-line summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Deployment (or director host).
    pub deployment: String,
    /// `backup`, `restore`, `drill`, …
    pub operation: String,
    /// The run's exit code (0: success).
    pub exit_code: i32,
    /// The backup made or used, when there is one (its id, or its directory's name).
    pub backup: Option<String>,
    /// Wall time.
    pub duration_seconds: f64,
    /// Bytes a backup stored.
    pub stored_bytes: Option<u64>,
}

/// `deployment cf: backup succeeded, backup 20240102T030405Z, 1m 32s, 1.5 GiB` (or `failed
/// (exit code 4)`); parts that are unknown are left out.
#[must_use]
pub fn slack_text(summary: &Summary) -> String {
    let outcome = if summary.exit_code == 0 {
        "succeeded".to_string()
    } else {
        format!("FAILED (exit code {})", summary.exit_code)
    };
    let mut parts = vec![format!(
        "Cairn: deployment {}: {} {outcome}",
        summary.deployment, summary.operation
    )];
    if let Some(backup) = &summary.backup {
        parts.push(format!("backup {backup}"));
    }
    parts.push(duration_text(summary.duration_seconds));
    if let Some(bytes) = summary.stored_bytes {
        parts.push(super::size_text(bytes));
    }
    parts.join(", ")
}

/// `1h 2m 3s`, `2m 5s`, `4.2s`.
fn duration_text(seconds: f64) -> String {
    let whole = seconds.max(0.0).round() as u64;
    match (whole / 3600, whole % 3600 / 60, whole % 60) {
        (0, 0, _) => format!("{:.1}s", seconds.max(0.0)),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, s) => format!("{h}h {m}m {s}s"),
    }
}

/// The body sent to a webhook of `format`.
#[must_use]
pub fn body(format: Format, notification: &Notification) -> Vec<u8> {
    match format {
        Format::Json => notification.event_line.clone().into_bytes(),
        Format::Slack => serde_json::json!({ "text": slack_text(&notification.summary) })
            .to_string()
            .into_bytes(),
    }
}

/// `sha256=<hex>`: HMAC-SHA256 of `body` under `secret`, the value of [`SIGNATURE_HEADER`].
#[must_use]
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `https://hooks.example.com:8443/…`: the URL without its path, query or user, which may
/// hold a credential.
#[must_use]
pub fn redacted(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = if url.path() == "/" && url.query().is_none() {
        ""
    } else {
        "/…"
    };
    format!("{}://{host}{port}{rest}", url.scheme())
}

/// A webhook that did not take the notification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "notification to {url} failed after {}: {detail}; the run's result is unchanged",
    tries_text(*.tries)
)]
pub struct NotifyError {
    /// [`redacted`] URL.
    pub url: String,
    /// Tries made.
    pub tries: u32,
    /// The last answer or error.
    pub detail: String,
}

/// `1 try`, `3 tries`.
fn tries_text(tries: u32) -> String {
    if tries == 1 {
        "1 try".into()
    } else {
        format!("{tries} tries")
    }
}

/// Cannot build the HTTP client.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up notifications: {0}")]
pub struct SetupError(String);

/// Sends notifications to the webhooks of a run.
#[derive(Debug)]
pub struct Notifier {
    webhooks: Vec<Webhook>,
    secret: Option<Zeroizing<Vec<u8>>>,
    policy: Policy,
    client: reqwest::Client,
}

/// How one try ended.
enum Try {
    Delivered,
    /// Worth another try, with what happened.
    Transient(String),
    /// Not worth another try.
    Permanent(String),
}

impl Notifier {
    /// A notifier for `webhooks`, signing with `secret` when there is one.
    ///
    /// # Errors
    /// The HTTP client cannot be built (no TLS roots).
    pub fn new(
        webhooks: Vec<Webhook>,
        secret: Option<Zeroizing<Vec<u8>>>,
        policy: Policy,
    ) -> Result<Notifier, SetupError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout)
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SetupError(e.to_string()))?;
        Ok(Notifier {
            webhooks,
            secret,
            policy,
            client,
        })
    }

    /// The webhooks.
    #[must_use]
    pub fn webhooks(&self) -> &[Webhook] {
        &self.webhooks
    }

    /// The retry policy.
    #[must_use]
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// POSTs `notification` to every webhook at once; returns what failed. Takes at most
    /// [`Policy::bound`].
    pub async fn send(&self, notification: &Notification) -> Vec<NotifyError> {
        let sends = self
            .webhooks
            .iter()
            .map(|webhook| self.send_one(webhook, notification));
        futures::future::join_all(sends)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect()
    }

    async fn send_one(
        &self,
        webhook: &Webhook,
        notification: &Notification,
    ) -> Result<(), NotifyError> {
        let body = body(webhook.format, notification);
        let signature = self.secret.as_ref().map(|s| signature(s, &body));
        let mut pause = self.policy.backoff;
        let mut tries = 0;
        loop {
            tries += 1;
            let detail = match self.try_once(webhook, &body, signature.as_deref()).await {
                Try::Delivered => return Ok(()),
                Try::Transient(detail) if tries < self.policy.attempts => {
                    tracing::debug!(
                        "notification to {} failed ({detail}); trying again in {pause:?}",
                        redacted(&webhook.url)
                    );
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    continue;
                }
                Try::Permanent(detail) | Try::Transient(detail) => detail,
            };
            return Err(NotifyError {
                url: redacted(&webhook.url),
                tries,
                detail,
            });
        }
    }

    async fn try_once(&self, webhook: &Webhook, body: &[u8], signature: Option<&str>) -> Try {
        let mut request = self
            .client
            .post(webhook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    Try::Delivered
                } else if status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                {
                    Try::Transient(format!("HTTP {status}"))
                } else {
                    Try::Permanent(format!("HTTP {status}"))
                }
            }
            // reqwest's message names the URL, which may hold a credential: say what kind
            // of failure it was instead.
            Err(error) => Try::Transient(if error.is_timeout() {
                format!("no answer within {:?}", self.policy.timeout)
            } else if error.is_connect() {
                "cannot connect".to_string()
            } else {
                "the connection failed".to_string()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(exit_code: i32) -> Summary {
        Summary {
            deployment: "cf".into(),
            operation: "backup".into(),
            exit_code,
            backup: Some("20240102T030405Z".into()),
            duration_seconds: 92.4,
            stored_bytes: Some(3 * 1024 * 1024 / 2),
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(
            signature(b"Jefe", b"what do ya want for nothing!"),
            signature(b"Jefe", b"what do ya want for nothing?")
        );
    }

    #[test]
    fn the_slack_summary_is_one_line_with_every_fact() {
        assert_eq!(
            slack_text(&summary(0)),
            "Cairn: deployment cf: backup succeeded, backup 20240102T030405Z, 1m 32s, 1.5 MiB"
        );
        let failed = Summary {
            backup: None,
            stored_bytes: None,
            duration_seconds: 3.25,
            ..summary(5)
        };
        assert_eq!(
            slack_text(&failed),
            "Cairn: deployment cf: backup FAILED (exit code 5), 3.2s"
        );
        let notification = Notification {
            event_line: "{}".into(),
            summary: summary(0),
        };
        let slack: serde_json::Value =
            serde_json::from_slice(&body(Format::Slack, &notification)).unwrap();
        assert_eq!(slack["text"], slack_text(&summary(0)));
        assert_eq!(body(Format::Json, &notification), b"{}");
    }

    #[test]
    fn urls_are_shown_without_their_credentials() {
        let url = |text: &str| redacted(&reqwest::Url::parse(text).unwrap());
        assert_eq!(
            url("https://hooks.slack.com/services/T0/B0/XXXX"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            url("http://user:pw@127.0.0.1:8080/?token=1"),
            "http://127.0.0.1:8080/…"
        );
        assert_eq!(url("https://example.com"), "https://example.com");
    }

    #[test]
    fn the_bound_counts_every_try_and_pause() {
        assert_eq!(Policy::default().bound(), Duration::from_secs(33));
        let one = Policy {
            attempts: 1,
            ..Policy::default()
        };
        assert_eq!(one.bound(), Duration::from_secs(10));
    }

    /// A loopback HTTP server answering each request with the next of `statuses` (the last one
    /// from then on); returns the webhook URL and the count of requests.
    async fn server(statuses: Vec<u16>) -> (reqwest::Url, std::sync::Arc<std::sync::Mutex<u32>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook/T0K3N", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::Mutex::new(0_u32));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buffer = [0_u8; 4096];
                // Headers and the small body arrive together; read until the body's end.
                while let Ok(n) = stream.read(&mut buffer).await {
                    request.extend_from_slice(&buffer[..n]);
                    if n == 0 || request.ends_with(b"}") {
                        break;
                    }
                }
                let n = {
                    let mut count = seen.lock().unwrap();
                    *count += 1;
                    *count as usize
                };
                let status = statuses[(n - 1).min(statuses.len() - 1)];
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (reqwest::Url::parse(&url).unwrap(), count)
    }

    fn notifier(url: reqwest::Url) -> Notifier {
        let policy = Policy {
            attempts: 3,
            timeout: Duration::from_secs(5),
            backoff: Duration::from_millis(10),
        };
        let webhook = Webhook {
            url,
            format: Format::Json,
        };
        Notifier::new(vec![webhook], Some(Zeroizing::new(b"k".to_vec())), policy).unwrap()
    }

    fn notification() -> Notification {
        Notification {
            event_line: "{\"event\":\"run_finished\"}".into(),
            summary: summary(0),
        }
    }

    #[tokio::test]
    async fn server_errors_are_tried_again_and_other_refusals_are_not() {
        let (url, count) = server(vec![500, 503, 204]).await;
        assert_eq!(notifier(url).send(&notification()).await, vec![]);
        assert_eq!(*count.lock().unwrap(), 3);

        let (url, count) = server(vec![500]).await;
        let failures = notifier(url).send(&notification()).await;
        assert_eq!(*count.lock().unwrap(), 3, "three tries, no more");
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].tries, 3);
        assert!(
            failures[0].detail.starts_with("HTTP 500"),
            "{:?}",
            failures[0]
        );

        let (url, count) = server(vec![404, 204]).await;
        let failures = notifier(url).send(&notification()).await;
        assert_eq!(*count.lock().unwrap(), 1, "a 404 is not tried again");
        let line = failures[0].to_string();
        assert!(line.contains("failed after 1 try: HTTP 404"), "{line}");
        assert!(!line.contains("T0K3N"), "{line}");

        let (url, count) = server(vec![429, 302, 204]).await;
        let failures = notifier(url).send(&notification()).await;
        assert_eq!(
            *count.lock().unwrap(),
            2,
            "429 again, a redirect not followed"
        );
        assert!(
            failures[0].detail.starts_with("HTTP 302"),
            "{:?}",
            failures[0]
        );
    }

    #[test]
    fn formats_are_json_or_slack() {
        assert_eq!(Format::parse("slack"), Ok(Format::Slack));
        assert_eq!(Format::parse("json"), Ok(Format::Json));
        assert!(Format::parse("teams")
            .unwrap_err()
            .contains("json or slack"));
    }
}
