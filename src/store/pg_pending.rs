//! TEMPORARY (not committed): stand-ins for helper A's PostgreSQL store API, until it lands.
use crate::domain::error::StartError;

pub(crate) fn postgres_description(url: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(config) => {
            let user = config.get_user().unwrap_or("");
            let host = match config.get_hosts().first() {
                Some(postgres::config::Host::Tcp(host)) => host.clone(),
                _ => String::new(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            let db = config.get_dbname().unwrap_or("");
            format!("postgres://{user}@{host}:{port}/{db}")
        }
        Err(_) => "the PostgreSQL URL".into(),
    }
}

pub(crate) fn postgres_connect(url: &str) -> Result<postgres::Client, StartError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|err| StartError::caused("parsing the PostgreSQL URL", err))?;
    config.connect_timeout(std::time::Duration::from_secs(10));
    config.connect(postgres::NoTls).map_err(|err| {
        StartError::caused(format!("connecting to {}", postgres_description(url)), err)
    })
}

pub(crate) fn postgres_lock_writes(
    tx: &mut postgres::Transaction<'_>,
) -> Result<(), postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock(4242)", &[])
        .map(drop)
}

pub(crate) fn postgres_create(url: &str) -> Result<(), StartError> {
    let mut client = postgres_connect(url)?;
    let schema = std::fs::read_to_string("/tmp/pgops-dev-schema.sql").unwrap();
    client
        .batch_execute(&schema)
        .map_err(|err| StartError::caused("creating", err))
}
