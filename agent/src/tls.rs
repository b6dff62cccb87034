//! The agent's HTTP clients and TLS: `--ca` (and `--cert`/`--key` for nodes that require client
//! certificates) are read once at start; every client is built over that rustls configuration, so
//! `https://` registry addresses are trusted through the given CA only.

use std::sync::{Arc, OnceLock};

static TLS: OnceLock<Arc<lathe_tls::rustls::ClientConfig>> = OnceLock::new();

/// Reads the TLS files once, before any client is built; a bad file is an error naming it.
pub fn configure(files: &lathe_tls::ClientTlsFiles) -> Result<(), lathe_tls::TlsError> {
    let config = files.client_config()?;
    let _ = TLS.set(config);
    Ok(())
}

/// A `reqwest` client builder over the agent's TLS configuration (no CA: no `https://` node is
/// trusted).
pub fn client_builder() -> reqwest::ClientBuilder {
    let config = TLS.get_or_init(|| {
        lathe_tls::ClientTlsFiles::default()
            .client_config()
            .expect("a client config without files")
    });
    reqwest::Client::builder().use_preconfigured_tls(lathe_tls::rustls::ClientConfig::clone(config))
}
