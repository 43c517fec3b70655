//! The Director's HTTP API as bbr uses it (bbr-facts §5.1, §5.2): `/info`, UAA
//! client-credentials or basic auth, tasks, VMs, manifests, deployments and SSH sessions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::retry::{is_idempotent, transient_error, transient_status, Attempts, RetryPolicy};
use super::BoshError;
use crate::remote::dial::{Dialer, LocalSocks};

mod body;
use body::{Fetched, ReadFailure};

/// The Director's default port.
pub const DEFAULT_PORT: u16 = 25555;

/// How long to wait for a task before giving up.
const TASK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Renew a token at most this long before it expires, so a request never carries a stale one.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);

/// The longest a UAA token is trusted to live, whatever its `expires_in` says (a day): a
/// larger value (up to `u64::MAX` seconds, which no clock can add) is read as this, and a
/// token refused earlier is renewed on its 401 anyway.
const TOKEN_LIFETIME_CAP: Duration = Duration::from_secs(24 * 60 * 60);

/// The most of one Director or UAA answer Cairn reads (64 MiB): the largest real answers, a
/// big deployment's manifest or VM list, are a few MiB. A larger body is refused as it
/// arrives ([`BoshError::ResponseTooLarge`]), so a hostile or broken endpoint cannot exhaust
/// the jumpbox's memory.
pub const RESPONSE_LIMIT: u64 = 64 << 20;

/// What is needed to reach a Director.
#[derive(Clone)]
pub struct DirectorConfig {
    /// `https://host:port`.
    pub url: String,
    /// UAA client id (or basic-auth user).
    pub client: String,
    /// Its secret (or basic-auth password).
    pub secret: String,
    /// PEM of the CA that signed the Director's (and UAA's) certificate.
    pub ca_cert_pem: Option<String>,
    /// `BOSH_ALL_PROXY`, when set.
    pub dialer: Option<Arc<dyn Dialer>>,
    /// How idempotent requests are retried.
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for DirectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorConfig")
            .field("url", &self.url)
            .field("client", &self.client)
            .field("secret", &"<redacted>")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// bbr's `--target` → `https://host:port` (bosh-cli `NewConfigFromURL`: always HTTPS,
/// default port 25555). As in bosh-cli, a scheme is allowed and ignored: `http://host` is
/// reached over HTTPS too, since bosh-cli keeps only the host and port of the URL.
///
/// # Errors
/// [`BoshError::InvalidUrl`].
pub fn director_url(target: &str) -> Result<String, BoshError> {
    let invalid = |detail: &str| BoshError::InvalidUrl {
        target: target.to_string(),
        detail: detail.to_string(),
    };
    let rest = target
        .split_once("://")
        .map_or(target, |(_scheme, rest)| rest);
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(invalid("expected a host, e.g. 10.0.0.6 or 10.0.0.6:25555"));
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (address, tail) = inner
            .split_once(']')
            .ok_or_else(|| invalid("unclosed [ in an IPv6 address"))?;
        (format!("[{address}]"), tail.strip_prefix(':'))
    } else if authority.matches(':').count() > 1 {
        (format!("[{authority}]"), None)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => port
            .parse()
            .map_err(|_| invalid(&format!("port `{port}` is not a number")))?,
    };
    Ok(format!("https://{host}:{port}"))
}

/// A Director client, authenticated.
pub struct DirectorClient {
    base: String,
    http: reqwest::Client,
    auth: Auth,
    retry: RetryPolicy,
    /// Keeps the loopback SOCKS server behind `http` alive (proxied runs).
    _socks: Option<LocalSocks>,
}

impl std::fmt::Debug for DirectorClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

enum Auth {
    Basic { user: String, password: String },
    Uaa(UaaSession),
}

struct UaaSession {
    token_url: String,
    client: String,
    secret: String,
    token: tokio::sync::Mutex<Option<Token>>,
}

struct Token {
    header: String,
    /// A little before it expires (a tenth of its lifetime, at most [`TOKEN_MARGIN`]).
    renew_at: Instant,
}

#[derive(Deserialize)]
struct Info {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    user_authentication: Option<UserAuthentication>,
}

#[derive(Deserialize)]
struct UserAuthentication {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    options: Value,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default = "bearer")]
    token_type: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

fn bearer() -> String {
    "bearer".into()
}

/// One VM of `vms?format=full`.
#[derive(Debug, Clone, Deserialize)]
pub struct VmInfo {
    /// Instance group.
    pub job_name: String,
    /// BOSH index (absent for VMs being created).
    pub index: Option<u64>,
    /// Instance id.
    pub id: String,
    /// Addresses.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The group's bootstrap instance.
    #[serde(default)]
    pub bootstrap: bool,
}

/// One host of an SSH `setup` task's result.
#[derive(Debug, Clone, Deserialize)]
pub struct SshHostInfo {
    /// `success` or an error.
    pub status: String,
    /// Where to connect.
    #[serde(default)]
    pub ip: String,
    /// The VM's host key, authorized_keys format.
    #[serde(default)]
    pub host_public_key: String,
    /// Instance id.
    #[serde(default)]
    pub id: String,
    /// BOSH index.
    pub index: Option<u64>,
    /// Instance group.
    #[serde(default)]
    pub job: String,
    /// Why it failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
}

impl DirectorClient {
    /// Reads `/info` and logs in (UAA client credentials or basic auth).
    ///
    /// # Errors
    /// [`BoshError::Unreachable`] when the Director cannot be reached over trusted TLS,
    /// [`BoshError::Uaa`] when UAA refuses the client.
    pub async fn connect(config: &DirectorConfig) -> Result<DirectorClient, BoshError> {
        let socks = match &config.dialer {
            Some(dialer) => {
                let director = host_and_port(&config.url)?;
                let relay = LocalSocks::start(Arc::clone(dialer), &[(&director.0, director.1)])
                    .await
                    .map_err(|e| BoshError::Unreachable {
                        url: config.url.clone(),
                        detail: format!("cannot start the local proxy: {e}"),
                        transient: false,
                    })?;
                Some(relay)
            }
            None => None,
        };
        let http = http_client(config, socks.as_ref())?;
        let info = read_info(&http, &config.url, config.retry).await?;
        tracing::info!(
            "Director {} ({}, version {})",
            config.url,
            info.name,
            info.version
        );
        let auth = authentication(info, config)?;
        if let (Some(relay), Auth::Uaa(session)) = (&socks, &auth) {
            // The UAA is the one other place the Director client goes through the relay.
            let (host, port) = host_and_port(&session.token_url)?;
            relay.allow(&host, port);
        }
        let client = DirectorClient {
            base: config.url.clone(),
            http,
            auth,
            retry: config.retry,
            _socks: socks,
        };
        // Refused credentials are best reported now, before anything else happens.
        if let Auth::Uaa(session) = &client.auth {
            client.uaa_authorization(session, false).await?;
        }
        Ok(client)
    }

    /// The Director's URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Adds the `Authorization` header to `request` (basic auth, or the UAA token, fetching a
    /// new one when needed).
    async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        renew: bool,
    ) -> Result<reqwest::RequestBuilder, BoshError> {
        match &self.auth {
            Auth::Basic { user, password } => Ok(request.basic_auth(user, Some(password))),
            Auth::Uaa(session) => Ok(request.header(
                reqwest::header::AUTHORIZATION,
                self.uaa_authorization(session, renew).await?,
            )),
        }
    }

    /// The UAA token's `Authorization` header value, fetching a new token when needed.
    async fn uaa_authorization(
        &self,
        session: &UaaSession,
        renew: bool,
    ) -> Result<String, BoshError> {
        let mut token = session.token.lock().await;
        let fresh = token.as_ref().is_some_and(|t| t.renew_at > Instant::now());
        let current = match token.take() {
            Some(current) if fresh && !renew => current,
            _ => self.fetch_token(session).await?,
        };
        let header = current.header.clone();
        *token = Some(current);
        Ok(header)
    }

    async fn fetch_token(&self, session: &UaaSession) -> Result<Token, BoshError> {
        tracing::debug!("Requesting a UAA token for client {}", session.client);
        let request = self
            .http
            .post(&session.token_url)
            .basic_auth(&session.client, Some(&session.secret))
            .form(&[("grant_type", "client_credentials")]);
        let answer = Fetched::read(request).await.map_err(|failure| {
            failure.into_error(&format!("POST {}", session.token_url), &session.token_url)
        })?;
        let status = answer.status;
        let text = String::from_utf8_lossy(&answer.body);
        if !status.is_success() {
            return Err(BoshError::Uaa {
                url: session.token_url.clone(),
                client: session.client.clone(),
                detail: format!("{status}: {}", error_description(&text)),
            });
        }
        let parsed: TokenResponse =
            serde_json::from_str(&text).map_err(|e| BoshError::Protocol {
                detail: format!("UAA token response: {e}"),
            })?;
        Ok(Token {
            header: format!("{} {}", parsed.token_type, parsed.access_token),
            renew_at: renewal_time(Instant::now(), parsed.expires_in),
        })
    }

    /// How idempotent requests are retried.
    #[must_use]
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Sends an authenticated request and reads its whole answer. A 401 with UAA renews the
    /// token once and sends it again; an idempotent request that met a transient failure is
    /// sent again within the retry policy ([`super::retry`]).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Fetched, BoshError> {
        let url = format!("{}{path}", self.base);
        let mut attempts = Attempts::start(self.retry);
        let mut renew = false;
        let mut renewed = false;
        loop {
            let mut request = self
                .authorize(self.http.request(method.clone(), &url), renew)
                .await?;
            renew = false;
            if let Some(body) = body {
                request = request.json(body);
            }
            tracing::debug!("{method} {url}");
            let outcome = Fetched::read(request).await;
            let transient = match &outcome {
                Ok(answer)
                    if answer.status == StatusCode::UNAUTHORIZED
                        && matches!(self.auth, Auth::Uaa(_))
                        && !renewed =>
                {
                    tracing::debug!("{method} {path}: 401, renewing the UAA token");
                    renew = true;
                    renewed = true;
                    continue;
                }
                Ok(answer) => transient_status(answer.status.as_u16()),
                Err(failure) => failure.transient(),
            };
            if let (Some(why), true) = (transient, is_idempotent(&method)) {
                if let Some(pause) = attempts.next_pause() {
                    tracing::debug!(
                        "{method} {path}: {why}; attempt {} of {} in {pause:?}",
                        attempts.made(),
                        self.retry.attempts
                    );
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
            return match outcome {
                Ok(mut answer) => {
                    answer.retries = attempts.summary();
                    Ok(answer)
                }
                Err(ReadFailure::Http(error)) => {
                    Err(unreachable_after(&self.base, &error, &attempts))
                }
                Err(too_large) => Err(too_large.into_error(&format!("{method} {url}"), &url)),
            };
        }
    }

    /// Sends a request and fails on any non-success status, with the Director's message.
    async fn checked(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Fetched, BoshError> {
        let answer = self.send(method.clone(), path, body).await?;
        let status = answer.status;
        if status.is_success() || status.is_redirection() {
            return Ok(answer);
        }
        Err(BoshError::Status {
            request: format!("{method} {path}"),
            status: status.as_u16(),
            description: format!(
                "{}{}",
                error_description(&String::from_utf8_lossy(&answer.body)),
                answer.retries
            ),
        })
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, BoshError> {
        let answer = self.checked(Method::GET, path, None).await?;
        serde_json::from_slice(&answer.body).map_err(|e| BoshError::Protocol {
            detail: format!("GET {path}: {e}"),
        })
    }

    /// Names of every deployment the client can see.
    ///
    /// # Errors
    /// [`BoshError`].
    pub async fn deployments(&self) -> Result<Vec<String>, BoshError> {
        let list: Vec<Value> = self.get_json("/deployments").await?;
        Ok(list
            .iter()
            .filter_map(|d| d["name"].as_str().map(str::to_string))
            .collect())
    }

    /// The deployment's manifest (YAML text).
    ///
    /// # Errors
    /// [`BoshError`]; 404 for an unknown deployment.
    pub async fn manifest(&self, deployment: &str) -> Result<String, BoshError> {
        let body: Value = self
            .get_json(&format!("/deployments/{}", path_segment(deployment)))
            .await?;
        Ok(body["manifest"].as_str().unwrap_or_default().to_string())
    }

    /// The deployment's VMs (a Director task).
    ///
    /// # Errors
    /// [`BoshError`]; 404 for an unknown deployment.
    pub async fn vms(&self, deployment: &str) -> Result<Vec<VmInfo>, BoshError> {
        let path = format!("/deployments/{}/vms?format=full", path_segment(deployment));
        let answer = self.checked(Method::GET, &path, None).await?;
        let output = self.task_result(&answer, &path).await?;
        output
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).map_err(|e| BoshError::Protocol {
                    detail: format!("a VM of {deployment}: {e}"),
                })
            })
            .collect()
    }

    /// `POST /deployments/<d>/ssh` with this body; returns the task's result (waits for it).
    ///
    /// # Errors
    /// [`BoshError`].
    pub async fn ssh(&self, deployment: &str, body: &Value) -> Result<String, BoshError> {
        let path = format!("/deployments/{}/ssh", path_segment(deployment));
        let answer = self.checked(Method::POST, &path, Some(body)).await?;
        self.task_result(&answer, &path).await
    }

    /// Follows a task redirect, polls the task until it ends and returns its result output.
    async fn task_result(&self, answer: &Fetched, request: &str) -> Result<String, BoshError> {
        let location = answer
            .location
            .as_deref()
            .ok_or_else(|| BoshError::Protocol {
                detail: format!("{request} answered {} without a task", answer.status),
            })?;
        let task_path = location
            .find("/tasks/")
            .map(|at| location[at..].to_string())
            .ok_or_else(|| BoshError::Protocol {
                detail: format!("{request} redirected to {location}, not a task"),
            })?;
        let id = task_path.trim_start_matches("/tasks/").to_string();
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            let task: Value = self.get_json(&task_path).await?;
            match task["state"].as_str().unwrap_or_default() {
                "done" => break,
                "queued" | "processing" | "cancelling" => {}
                state => {
                    return Err(BoshError::Task {
                        id,
                        state: state.to_string(),
                        description: task["result"]
                            .as_str()
                            .or(task["description"].as_str())
                            .unwrap_or_default()
                            .to_string(),
                    })
                }
            }
            if started.elapsed() > TASK_TIMEOUT {
                return Err(BoshError::Task {
                    id,
                    state: "still running".into(),
                    description: format!("gave up after {} s", TASK_TIMEOUT.as_secs()),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        let output = self
            .checked(
                Method::GET,
                &format!("{task_path}/output?type=result"),
                None,
            )
            .await?;
        String::from_utf8(output.body.to_vec()).map_err(|e| BoshError::Protocol {
            detail: format!("task {id} output: {e}"),
        })
    }
}

fn http_client(
    config: &DirectorConfig,
    socks: Option<&LocalSocks>,
) -> Result<reqwest::Client, BoshError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(15))
        .timeout(Duration::from_secs(300))
        .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &config.ca_cert_pem {
        for certificate in reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
            BoshError::CaCert {
                detail: e.to_string(),
            }
        })? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder =
        match socks {
            Some(socks) => builder.proxy(reqwest::Proxy::all(socks.url()).map_err(|e| {
                BoshError::Protocol {
                    detail: format!("proxy: {e}"),
                }
            })?),
            None => builder.no_proxy(),
        };
    builder.build().map_err(|e| BoshError::Protocol {
        detail: format!("HTTP client: {e}"),
    })
}

/// When to renew a token fetched at `now` that UAA says expires in `expires_in` seconds (300
/// when it does not say): a tenth of its lifetime early, at most [`TOKEN_MARGIN`]; a lifetime
/// beyond [`TOKEN_LIFETIME_CAP`] counts as that.
fn renewal_time(now: Instant, expires_in: Option<u64>) -> Instant {
    let lifetime = Duration::from_secs(expires_in.unwrap_or(300)).min(TOKEN_LIFETIME_CAP);
    let margin = (lifetime / 10).min(TOKEN_MARGIN);
    now.checked_add(lifetime.saturating_sub(margin))
        .unwrap_or(now)
}

/// [`unreachable`], saying how many attempts were made.
fn unreachable_after(url: &str, error: &reqwest::Error, attempts: &Attempts) -> BoshError {
    match unreachable(url, error) {
        BoshError::Unreachable {
            url,
            detail,
            transient,
        } => BoshError::Unreachable {
            url,
            detail: format!("{detail}{}", attempts.summary()),
            transient,
        },
        other => other,
    }
}

fn unreachable(url: &str, error: &reqwest::Error) -> BoshError {
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    if detail.contains("certificate") || detail.contains("UnknownIssuer") {
        detail.push_str(" (is --ca-cert the CA that signed the Director's certificate?)");
    }
    BoshError::Unreachable {
        url: url.to_string(),
        detail,
        transient: transient_error(error).is_some(),
    }
}

/// The message in a Director or UAA error body, or the body itself.
fn error_description(text: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    parsed
        .as_ref()
        .and_then(|v| {
            v["description"]
                .as_str()
                .or(v["error_description"].as_str())
                .or(v["error"].as_str())
        })
        .map_or_else(|| text.trim().chars().take(300).collect(), str::to_string)
}

/// What stays as it is in a path segment: RFC 3986's unreserved characters (letters, digits,
/// `-`, `.`, `_`, `~`); every other byte is percent-encoded.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a deployment name for a URL path.
fn path_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, PATH_SEGMENT).to_string()
}

/// `GET /info`: the Director's name, version and how to log in (retried as every GET).
async fn read_info(
    http: &reqwest::Client,
    url: &str,
    retry: RetryPolicy,
) -> Result<Info, BoshError> {
    let mut attempts = Attempts::start(retry);
    let answer = loop {
        let outcome = Fetched::read(http.get(format!("{url}/info"))).await;
        let transient = match &outcome {
            Ok(answer) => transient_status(answer.status.as_u16()),
            Err(failure) => failure.transient(),
        };
        if let Some(why) = transient {
            if let Some(pause) = attempts.next_pause() {
                tracing::debug!(
                    "GET /info: {why}; attempt {} of {} in {pause:?}",
                    attempts.made(),
                    retry.attempts
                );
                tokio::time::sleep(pause).await;
                continue;
            }
        }
        break outcome.map_err(|failure| match failure {
            ReadFailure::Http(error) => unreachable_after(url, &error, &attempts),
            too_large @ ReadFailure::TooLarge(_) => {
                too_large.into_error(&format!("GET {url}/info"), url)
            }
        })?;
    };
    if !answer.status.is_success() {
        return Err(BoshError::Unreachable {
            url: url.to_string(),
            detail: format!("GET /info answered {}{}", answer.status, attempts.summary()),
            transient: transient_status(answer.status.as_u16()).is_some(),
        });
    }
    serde_json::from_slice(&answer.body).map_err(|e| BoshError::Protocol {
        detail: format!("GET /info: {e}"),
    })
}

/// UAA client credentials when `/info` names a UAA, basic auth otherwise.
fn authentication(info: Info, config: &DirectorConfig) -> Result<Auth, BoshError> {
    Ok(match info.user_authentication {
        Some(auth) if auth.kind == "uaa" => {
            let url = auth.options["url"].as_str().unwrap_or_default();
            if url.is_empty() {
                return Err(BoshError::Protocol {
                    detail: "/info says uaa but gives no UAA url".into(),
                });
            }
            if !carries_secrets_safely(url) {
                return Err(BoshError::InsecureUaa {
                    url: url.to_string(),
                });
            }
            Auth::Uaa(UaaSession {
                token_url: format!("{}/oauth/token", url.trim_end_matches('/')),
                client: config.client.clone(),
                secret: config.secret.clone(),
                token: tokio::sync::Mutex::new(None),
            })
        }
        _ => Auth::Basic {
            user: config.client.clone(),
            password: config.secret.clone(),
        },
    })
}

/// The host and port of a URL (the scheme's port when it names none).
fn host_and_port(url: &str) -> Result<(String, u16), BoshError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| BoshError::Protocol {
        detail: format!("{url}: {e}"),
    })?;
    match (parsed.host_str(), parsed.port_or_known_default()) {
        (Some(host), Some(port)) => Ok((host.to_string(), port)),
        _ => Err(BoshError::Protocol {
            detail: format!("{url}: no host and port"),
        }),
    }
}

/// True for an `https://` URL, or an `http://` one to a loopback address (a stand-in on this
/// machine, where nothing travels on a network): where the UAA client secret may be sent.
fn carries_secrets_safely(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let host = parsed
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    match parsed.scheme() {
        "https" => !host.is_empty(),
        "http" => host
            .parse::<std::net::IpAddr>()
            .map_or(host.eq_ignore_ascii_case("localhost"), |ip| {
                ip.is_loopback()
            }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uaa_secrets_go_only_over_https_or_to_loopback() {
        for safe in [
            "https://10.0.0.6:8443",
            "https://uaa.example.com/",
            "http://127.0.0.1:8080",
            "http://127.7.0.1",
            "http://[::1]:8080",
            "http://localhost:8080",
        ] {
            assert!(carries_secrets_safely(safe), "{safe}");
        }
        for unsafe_url in [
            "http://10.0.0.6:8443",
            "http://uaa.example.com",
            "http://localhost.example.com",
            "10.0.0.6:8443",
            "ftp://10.0.0.6",
            "",
        ] {
            assert!(!carries_secrets_safely(unsafe_url), "{unsafe_url}");
        }
    }

    #[test]
    fn targets_become_https_urls_with_the_default_port() {
        assert_eq!(director_url("10.0.0.6").unwrap(), "https://10.0.0.6:25555");
        assert_eq!(
            director_url("https://director.example:8443").unwrap(),
            "https://director.example:8443"
        );
        assert_eq!(
            director_url("10.0.0.6:443").unwrap(),
            "https://10.0.0.6:443"
        );
        assert_eq!(
            director_url("[fd00::6]:25555").unwrap(),
            "https://[fd00::6]:25555"
        );
        assert_eq!(director_url("fd00::6").unwrap(), "https://[fd00::6]:25555");
        // bosh-cli keeps the host and port of any URL and always speaks HTTPS.
        assert_eq!(director_url("http://x").unwrap(), "https://x:25555");
        assert_eq!(
            director_url("http://x:8443/info").unwrap(),
            "https://x:8443"
        );
        assert!(director_url("https://")
            .unwrap_err()
            .to_string()
            .starts_with("invalid bosh URL - "));
        assert!(director_url("10.0.0.6:port").is_err());
        assert!(director_url("").is_err());
    }

    /// Requests a [`scripted_director`] saw (`METHOD PATH`), one per request.
    type Seen = Arc<std::sync::Mutex<Vec<String>>>;

    /// An HTTP server on a local socket answering each request with `answer(method, path,
    /// count of that request so far)`: a status and a body, or `None` to drop the connection.
    /// Returns its URL, the requests and, per request, its `Authorization` header (empty
    /// when it had none).
    async fn scripted_director(
        answer: fn(&str, &str, usize) -> Option<(u16, String)>,
    ) -> (String, Seen, Seen) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let authorizations = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = Arc::clone(&seen);
        let headers = Arc::clone(&authorizations);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                let headers = Arc::clone(&headers);
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 16384];
                    let n = stream.read(&mut buffer).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buffer[..n]).to_string();
                    let mut words = head.split_whitespace();
                    let request = format!(
                        "{} {}",
                        words.next().unwrap_or(""),
                        words.next().unwrap_or("")
                    );
                    let authorization = head
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("authorization")
                                .then(|| value.trim().to_string())
                        })
                        .unwrap_or_default();
                    headers.lock().unwrap().push(authorization);
                    let count = {
                        let mut log = log.lock().unwrap();
                        log.push(request.clone());
                        log.iter().filter(|r| **r == request).count()
                    };
                    let (method, path) = request.split_once(' ').unwrap();
                    if let Some((status, body)) = answer(method, path, count) {
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(reply.as_bytes()).await;
                    }
                });
            }
        });
        (url, seen, authorizations)
    }

    fn config(url: &str, attempts: u32) -> DirectorConfig {
        DirectorConfig {
            url: url.to_string(),
            client: "admin".into(),
            secret: "s".into(),
            ca_cert_pem: None,
            dialer: None,
            retry: RetryPolicy {
                attempts,
                total: Duration::from_secs(60),
                first_pause: Duration::from_millis(10),
                max_pause: Duration::from_millis(40),
            },
        }
    }

    #[tokio::test]
    async fn reads_are_retried_and_posts_are_not() {
        let (url, seen, _) = scripted_director(|method, path, count| match (method, path) {
            // /info: dropped once, then answered.
            ("GET", "/info") if count == 1 => None,
            ("GET", "/info") => Some((200, r#"{"name":"d","version":"1"}"#.into())),
            // Two 502s and a drop, then the list.
            ("GET", "/deployments") if count <= 2 => Some((502, "Bad Gateway".into())),
            ("GET", "/deployments") if count == 3 => None,
            ("GET", "/deployments") => Some((200, r#"[{"name":"cf"}]"#.into())),
            // Always 503.
            ("GET", "/deployments/down") => Some((503, "down".into())),
            // A POST meets a 503 once: not sent again.
            ("POST", _) => Some((503, "busy".into())),
            _ => Some((404, "{}".into())),
        })
        .await;
        let client = DirectorClient::connect(&config(&url, 4)).await.unwrap();
        assert_eq!(client.deployments().await.unwrap(), vec!["cf".to_string()]);
        let error = client.manifest("down").await.unwrap_err();
        assert!(error.is_transient());
        assert!(
            error.to_string().contains("status code 503")
                && error.to_string().contains("gave up after 4 attempts"),
            "{error}"
        );
        let error = client
            .ssh("cf", &serde_json::json!({"command": "setup"}))
            .await
            .unwrap_err();
        assert!(error.is_transient(), "{error}");
        let seen = seen.lock().unwrap().clone();
        let count = |request: &str| seen.iter().filter(|r| *r == request).count();
        assert_eq!(count("GET /info"), 2, "{seen:?}");
        assert_eq!(count("GET /deployments"), 4, "{seen:?}");
        assert_eq!(count("GET /deployments/down"), 4, "{seen:?}");
        assert_eq!(count("POST /deployments/cf/ssh"), 1, "{seen:?}");
    }

    #[tokio::test]
    async fn one_attempt_means_no_retry_and_4xx_is_never_retried() {
        let (url, seen, _) = scripted_director(|method, path, _| match (method, path) {
            ("GET", "/info") => Some((200, r#"{"name":"d"}"#.into())),
            ("GET", "/deployments") => Some((502, "Bad Gateway".into())),
            _ => Some((404, r#"{"description":"no such deployment"}"#.into())),
        })
        .await;
        let client = DirectorClient::connect(&config(&url, 1)).await.unwrap();
        let error = client.deployments().await.unwrap_err();
        assert!(!error.to_string().contains("gave up"), "{error}");
        let retrying = DirectorClient::connect(&config(&url, 5)).await.unwrap();
        let error = retrying.manifest("x").await.unwrap_err();
        assert!(!error.is_transient());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.iter().filter(|r| *r == "GET /deployments").count(),
            1,
            "{seen:?}"
        );
        assert_eq!(
            seen.iter().filter(|r| *r == "GET /deployments/x").count(),
            1,
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn answers_larger_than_the_limit_are_refused_and_not_retried() {
        let (url, seen, _) = scripted_director(|method, path, _| match (method, path) {
            ("GET", "/info") => Some((200, r#"{"name":"d"}"#.into())),
            ("GET", "/deployments") => Some((200, "x".repeat(70 << 20))),
            _ => Some((404, "{}".into())),
        })
        .await;
        let client = DirectorClient::connect(&config(&url, 4)).await.unwrap();
        let error = client.deployments().await.unwrap_err();
        assert!(
            matches!(error, BoshError::ResponseTooLarge { limit, .. } if limit == RESPONSE_LIMIT),
            "{error}"
        );
        assert!(
            error.to_string().starts_with(&format!(
                "The answer to GET {url}/deployments is larger than 67108864 bytes"
            )),
            "{error}"
        );
        assert!(!error.is_transient());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.iter().filter(|r| *r == "GET /deployments").count(),
            1,
            "{seen:?}"
        );
    }

    #[test]
    fn a_token_lifetime_no_clock_can_add_is_read_as_a_day() {
        let now = Instant::now();
        let at = |expires_in| renewal_time(now, expires_in).duration_since(now);
        assert_eq!(at(Some(u64::MAX)), Duration::from_secs(24 * 60 * 60 - 30));
        assert_eq!(at(Some(600)), Duration::from_secs(570));
        assert_eq!(at(None), Duration::from_secs(270));
        assert_eq!(at(Some(100)), Duration::from_secs(90));
        assert_eq!(at(Some(0)), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_director_without_uaa_gets_basic_auth_on_every_request_but_info() {
        let (url, seen, authorizations) =
            scripted_director(|method, path, _| match (method, path) {
                ("GET", "/info") => Some((200, r#"{"name":"d"}"#.into())),
                ("GET", "/deployments") => Some((200, r#"[{"name":"cf"}]"#.into())),
                _ => Some((404, "{}".into())),
            })
            .await;
        let mut config = config(&url, 1);
        config.client = "admin".into();
        config.secret = "p\u{e4}ss:w\u{f6}rd".into();
        let client = DirectorClient::connect(&config).await.unwrap();
        assert_eq!(client.deployments().await.unwrap(), vec!["cf".to_string()]);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, ["GET /info", "GET /deployments"]);
        // RFC 7617: base64 of `user:password`, the password's UTF-8 bytes as they are.
        assert_eq!(
            *authorizations.lock().unwrap(),
            ["", "Basic YWRtaW46cMOkc3M6d8O2cmQ="]
        );
    }

    #[test]
    fn error_bodies_give_their_description() {
        assert_eq!(
            error_description(r#"{"code":70000,"description":"Deployment 'x' doesn't exist"}"#),
            "Deployment 'x' doesn't exist"
        );
        assert_eq!(
            error_description(r#"{"error":"unauthorized","error_description":"Bad credentials"}"#),
            "Bad credentials"
        );
        assert_eq!(error_description("plain text"), "plain text");
        assert_eq!(path_segment("cf prod/x"), "cf%20prod%2Fx");
        assert_eq!(path_segment("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(path_segment("?#%:\u{e9}"), "%3F%23%25%3A%C3%A9");
    }
}
