//! Configuration: built-in defaults, then a TOML file, then `XIANLU_…`
//! environment variables (each layer overrides the one before).

use std::net::SocketAddr;
use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the SQLite database lives when `database_url` is not set.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`; defaults to SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// SQLite durability: `FULL` (fsync every commit) or `NORMAL` (WAL, fsync at checkpoints).
    pub sqlite_synchronous: String,
    pub max_connections: u32,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest evidence upload (an image, base64, with its metadata), in bytes.
    pub max_evidence_bytes: usize,
    /// Shared secret of the payment gateway's HMAC-SHA256 notifications.
    pub payment_webhook_secret: Option<String>,
    /// How old a signed payment notification may be, in seconds.
    pub payment_webhook_tolerance_secs: i64,
    /// Hours a saved idempotent response is kept (at least 24).
    pub idempotency_retention_hours: i64,
    /// Events buffered per push subscriber before it is told to resync.
    pub stream_buffer: usize,
    /// Orders kept in the hot-order cache.
    pub cache_capacity: usize,
    /// An audit anchor record every this many entries of a merchant's chain.
    pub audit_anchor_every: i64,
    /// Also accept the `X-Xianlu-Dev-Actor` header as the caller's identity.
    /// For tests only: nothing checks who sends it. No file or environment
    /// variable can turn it on; only the test build of the server does.
    #[serde(skip)]
    pub dev_actor_header: bool,
    /// `text` or `json`.
    pub log_format: String,
    /// How often timers (unanswered substitution offers, alert rules) are checked, in milliseconds.
    pub timer_interval_ms: u64,
    /// Secret that signs access tokens (HS256), at least 32 bytes. Every
    /// replica needs the same one; without it each start makes a random one.
    pub token_secret: Option<String>,
    /// An external map tile URL template (`https://…/{z}/{x}/{y}.png`) for
    /// deployments that have a tile service; the apps draw the served road
    /// geometry without one.
    pub map_tile_url: Option<String>,
    /// Where the customer app's web build is (`index.html`, its script and
    /// wasm, each optionally with a `.gz` beside it): served at `/t/{token}`,
    /// the page a tracking link opens.
    pub customer_web_dir: Option<PathBuf>,
    /// The courier app's web build (same layout): served at `/courier`, for
    /// couriers on a shared tablet or a phone without the installed app.
    pub courier_web_dir: Option<PathBuf>,
    /// Where travel times come from: `local` (the imported road network) or
    /// `amap` (AMap's web service, needs `amap_key`).
    pub map_provider: String,
    /// The AMap web-service key (never logged).
    pub amap_key: Option<String>,
    /// AMap's base URL (a proxy or a test double may stand in).
    pub amap_base_url: Option<String>,
    /// Seconds an access token is valid.
    pub access_token_ttl_secs: i64,
    /// Days a refresh token is valid.
    pub refresh_token_ttl_days: i64,
    /// Serve HTTPS with this PEM certificate chain (and `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// With TLS: refuse every protocol version but TLS 1.3.
    pub tls13_only: bool,
    /// Master keys for personal data (`KEY_ID BASE64` lines; the last wraps new
    /// data). Never inside the database. Default: `DATA_DIR/keys/personal-data.keys`,
    /// created on first start.
    pub data_keys_file: Option<PathBuf>,
    /// The same keys given directly (`KEY_ID BASE64` entries separated by `;`),
    /// e.g. from a secret store through `XIANLU_DATA_KEYS`; wins over the file.
    pub data_keys: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            sqlite_synchronous: "FULL".into(),
            max_connections: 16,
            max_body_bytes: 256 * 1024,
            max_evidence_bytes: 6 * 1024 * 1024,
            payment_webhook_secret: None,
            payment_webhook_tolerance_secs: 300,
            idempotency_retention_hours: 24,
            stream_buffer: 256,
            cache_capacity: 10_000,
            audit_anchor_every: 1000,
            dev_actor_header: false,
            log_format: "text".into(),
            timer_interval_ms: 5000,
            token_secret: None,
            map_tile_url: None,
            customer_web_dir: None,
            courier_web_dir: None,
            map_provider: "local".into(),
            amap_key: None,
            amap_base_url: None,
            access_token_ttl_secs: 900,
            refresh_token_ttl_days: 30,
            tls_cert: None,
            tls_key: None,
            tls13_only: false,
            data_keys_file: None,
            data_keys: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads defaults → `file` (if given, or `xianlu.toml` when present) → `XIANLU_*` env.
    pub fn load(file: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Invalid(format!("{} does not exist", path.display())));
                }
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("xianlu.toml")),
        }
        let config: Config = figment.merge(Env::prefixed("XIANLU_").ignore(&["config"])).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.idempotency_retention_hours < 24 {
            return Err(ConfigError::Invalid("idempotency_retention_hours must be at least 24".into()));
        }
        if !matches!(self.sqlite_synchronous.to_ascii_uppercase().as_str(), "NORMAL" | "FULL") {
            return Err(ConfigError::Invalid("sqlite_synchronous must be NORMAL or FULL".into()));
        }
        if self.token_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err(ConfigError::Invalid("token_secret must be at least 32 bytes".into()));
        }
        if self.access_token_ttl_secs <= 0 || self.refresh_token_ttl_days <= 0 {
            return Err(ConfigError::Invalid("token lifetimes must be positive".into()));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid("tls_cert and tls_key go together".into()));
        }
        if self.stream_buffer == 0 || self.audit_anchor_every <= 0 {
            return Err(ConfigError::Invalid("stream_buffer and audit_anchor_every must be positive".into()));
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("xianlu.db").display()))
    }

    /// The configuration as TOML with secrets replaced, for `print-config` and logs.
    pub fn redacted(&self) -> String {
        let mut shown = self.clone();
        if shown.payment_webhook_secret.is_some() {
            shown.payment_webhook_secret = Some("<redacted>".into());
        }
        if shown.token_secret.is_some() {
            shown.token_secret = Some("<redacted>".into());
        }
        if shown.data_keys.is_some() {
            shown.data_keys = Some("<redacted>".into());
        }
        if let Some(url) = &shown.database_url {
            shown.database_url = Some(redact_url_password(url));
        }
        toml_string(&shown)
    }
}

fn toml_string(config: &Config) -> String {
    // figment's TOML provider reads; for writing, a small hand-rolled listing is enough.
    let value = serde_json::to_value(config).unwrap_or_default();
    let mut out = String::new();
    if let Some(map) = value.as_object() {
        for (key, value) in map {
            if !value.is_null() {
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
    }
    out
}

fn redact_url_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:<redacted>{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_header_cannot_be_switched_on_by_configuration() {
        let figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string("dev_actor_header = true"));
        assert!(figment.extract::<Config>().is_err(), "refused as an unknown setting");
        assert!(!Config::default().dev_actor_header);
    }

    #[test]
    fn database_passwords_never_appear_in_printed_config() {
        assert_eq!(redact_url_password("postgres://u:secret@h/db"), "postgres://u:<redacted>@h/db");
        assert_eq!(redact_url_password("postgres://u@h/db"), "postgres://u@h/db");
        let config = Config { payment_webhook_secret: Some("s3cr3t".into()), ..Config::default() };
        assert!(!config.redacted().contains("s3cr3t"));
    }
}
