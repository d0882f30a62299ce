//! A PostgreSQL `--db` URL, which may carry a password: it is shown only redacted (`Debug`,
//! `Display`, every error and log line), and `connect` is the one way a connection is made
//! from it (with the time limits and settings every connection of the server needs).

use crate::domain::error::StartError;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// How long a connection attempt may take, the server's authentication included (generous:
/// a loaded server takes seconds to authenticate a new connection).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long sent data may stay unacknowledged before the kernel gives the connection up: a
/// server that vanished (a cut network) fails the statement instead of hanging it forever.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(15);
/// Connection attempts left running past their timeout (each on a thread of its own, until
/// the server answers or the socket fails), at most: beyond it a new attempt is refused at
/// once, so a server that accepts and never answers cannot pile up threads.
const MAX_ATTEMPTS_IN_FLIGHT: usize = 16;
/// What the server's `pg_stat_activity` shows for our connections.
const APPLICATION_NAME: &str = "authkeys";

/// A `postgres://` or `postgresql://` URL, as given.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(String);

impl PgUrl {
    /// Whether `arg` names a PostgreSQL database rather than a SQLite file.
    pub(crate) fn is_postgres(arg: &str) -> bool {
        ["postgres://", "postgresql://"]
            .iter()
            .any(|scheme| arg.starts_with(scheme))
    }

    pub(crate) fn new(url: &str) -> PgUrl {
        PgUrl(url.to_string())
    }

    /// The URL with its password (in the user part or a `password=` parameter) replaced by
    /// `***`.
    pub(crate) fn redacted(&self) -> String {
        let url = &self.0;
        let mut out = url.clone();
        if let Some(start) = url.find("://").map(|at| at + 3)
            && let Some(at) = url[start..].find('@').map(|at| start + at)
            && let Some(colon) = url[start..at].find(':').map(|colon| start + colon)
        {
            out = format!("{}:***{}", &url[..colon], &url[at..]);
        }
        redact_password_parameter(&out)
    }

    /// `text` (an error message) with the password, as given or decoded, replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut text = text.replace(&self.0, &self.redacted());
        for password in self.passwords() {
            if !password.is_empty() {
                text = text.replace(&password, "***");
            }
        }
        text
    }

    /// The password as written in the URL and as decoded (they differ when percent-encoded).
    fn passwords(&self) -> Vec<String> {
        let mut found = Vec::new();
        if let Ok(config) = postgres::Config::from_str(&self.0)
            && let Some(password) = config.get_password()
        {
            found.push(String::from_utf8_lossy(password).into_owned());
        }
        let url = &self.0;
        if let Some(start) = url.find("://").map(|at| at + 3)
            && let Some(at) = url[start..].find('@').map(|at| start + at)
            && let Some(colon) = url[start..at].find(':')
        {
            found.push(url[start + colon + 1..at].to_string());
        }
        // The longest first, so a password containing another is replaced whole.
        found.sort_by_key(|password| std::cmp::Reverse(password.len()));
        found
    }

    /// The connection settings, or a start-up error naming what is wrong (redacted).
    pub(crate) fn config(&self) -> Result<postgres::Config, StartError> {
        let mut config = postgres::Config::from_str(&self.0).map_err(|err| {
            StartError::new(format!(
                "{} is not a valid PostgreSQL URL: {}",
                self.redacted(),
                self.redact(&err.to_string())
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        // Not the NOTICEs of re-applying the schema (`… already exists, skipping`) at each
        // start; after the URL's own `options` (a search_path, say), which are kept.
        let options = match config.get_options() {
            Some(given) => format!("{given} -c client_min_messages=warning"),
            None => "-c client_min_messages=warning".to_string(),
        };
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        config
            .options(&options)
            .tcp_user_timeout(TCP_USER_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        Ok(config)
    }
}

fn redact_password_parameter(url: &str) -> String {
    let Some(query) = url.find('?') else {
        return url.to_string();
    };
    let params: Vec<String> = url[query + 1..]
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if name == "password" => format!("{name}=***"),
            _ => param.to_string(),
        })
        .collect();
    format!("{}?{}", &url[..query], params.join("&"))
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({:?})", self.redacted())
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Why a connection could not be made, its message already redacted.
#[derive(Debug)]
pub(crate) struct ConnectError {
    pub(crate) message: String,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectError {}

/// Opens a connection to the database at `url` with the server's settings (connect timeout,
/// TCP user timeout, keepalives, application name). The whole attempt, authentication
/// included, is bounded by the connect timeout: the client library bounds only the socket's
/// connection, so a server that accepts and then says nothing would otherwise hang the start.
/// Reusable by every part of the server that needs a connection of its own.
pub(crate) fn connect(url: &PgUrl) -> Result<postgres::Client, StartError> {
    connect_with(url, &url.config()?).map_err(|err| StartError::new(err.message))
}

pub(crate) fn connect_with(
    url: &PgUrl,
    config: &postgres::Config,
) -> Result<postgres::Client, ConnectError> {
    static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
    connect_counted(&IN_FLIGHT, url, config)
}

/// `connect_with`, counting the attempts still running in `in_flight`.
fn connect_counted(
    in_flight: &'static AtomicUsize,
    url: &PgUrl,
    config: &postgres::Config,
) -> Result<postgres::Client, ConnectError> {
    let timeout = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_ATTEMPTS_IN_FLIGHT {
        in_flight.fetch_sub(1, Ordering::SeqCst);
        return Err(ConnectError {
            message: format!(
                "connecting to {}: {MAX_ATTEMPTS_IN_FLIGHT} earlier attempts are still waiting",
                url.redacted()
            ),
        });
    }
    let (sent, received) = mpsc::channel();
    let config = config.clone();
    std::thread::Builder::new()
        .name("pg-connect".into())
        .spawn(move || {
            let _ = sent.send(config.connect(postgres::NoTls));
            in_flight.fetch_sub(1, Ordering::SeqCst);
        })
        .map_err(|err| {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            ConnectError {
                message: format!("connecting to {}: {err}", url.redacted()),
            }
        })?;
    match received.recv_timeout(timeout) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(err)) => Err(ConnectError {
            message: format!(
                "connecting to {}: {}",
                url.redacted(),
                url.redact(&error_chain(&err))
            ),
        }),
        Err(_) => Err(ConnectError {
            message: format!(
                "connecting to {}: no answer within {} ms",
                url.redacted(),
                timeout.as_millis()
            ),
        }),
    }
}

/// An error and its sources, as one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_redacted_wherever_it_is_shown() {
        let url = PgUrl::new("postgres://app:s3cr%40t@db.example:5432/authkeys?sslmode=disable");
        assert_eq!(
            url.redacted(),
            "postgres://app:***@db.example:5432/authkeys?sslmode=disable"
        );
        assert!(!format!("{url:?} {url}").contains("s3cr"));
        assert_eq!(
            url.redact("failed for s3cr@t and s3cr%40t"),
            "failed for *** and ***"
        );
        let param = PgUrl::new("postgresql://db/authkeys?user=app&password=hunter22&x=1");
        assert_eq!(
            param.redacted(),
            "postgresql://db/authkeys?user=app&password=***&x=1"
        );
        assert!(!param.redact(&param.0).contains("hunter22"));
        let config_error = PgUrl::new("postgres://app:hunter22@db:notaport/authkeys")
            .config()
            .unwrap_err();
        let shown = format!("{config_error} {config_error:?}");
        assert!(shown.contains("not a valid PostgreSQL URL"), "{shown}");
        assert!(!shown.contains("hunter22"), "{shown}");
    }

    /// The URL's own `options` (a search_path, say) and application name are kept.
    #[test]
    fn the_urls_own_options_are_kept() {
        let kept = PgUrl::new("postgres://h/d?options=-c%20search_path%3Dauth&application_name=n")
            .config()
            .unwrap();
        assert_eq!(
            kept.get_options(),
            Some("-c search_path=auth -c client_min_messages=warning")
        );
        assert_eq!(kept.get_application_name(), Some("n"));
    }

    /// A server that accepts and never answers holds at most `MAX_ATTEMPTS_IN_FLIGHT` attempts
    /// (threads); one more is refused at once, and they all end once the server goes.
    #[test]
    fn attempts_left_waiting_on_a_silent_server_are_bounded() {
        static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let url = PgUrl::new(&format!(
            "postgres://u:pw@127.0.0.1:{port}/d?connect_timeout=1"
        ));
        let config = url.config().unwrap();
        let results: Vec<String> = std::thread::scope(|scope| {
            let attempts: Vec<_> = (0..MAX_ATTEMPTS_IN_FLIGHT)
                .map(|_| scope.spawn(|| connect_counted(&IN_FLIGHT, &url, &config)))
                .collect();
            // Once every attempt is under way, one more.
            while IN_FLIGHT.load(Ordering::SeqCst) < MAX_ATTEMPTS_IN_FLIGHT {
                std::thread::sleep(Duration::from_millis(5));
            }
            let extra = connect_counted(&IN_FLIGHT, &url, &config);
            attempts
                .into_iter()
                .map(|attempt| attempt.join().unwrap())
                .chain([extra])
                .map(|result| result.err().expect("no server answers").message)
                .collect()
        });
        let waiting = results
            .iter()
            .filter(|message| message.contains("no answer within 1000 ms"))
            .count();
        assert_eq!(waiting, MAX_ATTEMPTS_IN_FLIGHT, "{results:?}");
        assert!(
            results
                .last()
                .unwrap()
                .contains("earlier attempts are still waiting"),
            "{results:?}"
        );
        drop(silent);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while IN_FLIGHT.load(Ordering::SeqCst) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "attempts left running"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
