//! How Herald authenticates to Kafka and encrypts the connection: plaintext, SSL (optionally with a client
//! certificate) or SASL over SSL with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, chosen by environment variables.
//!
//! Certificates are files, as managed Kafka services hand them out, looked for by default in `certificates/`
//! (`HERALD_CERTIFICATES_DIR`): `ca.pem`, `client.pem`, `client.key`. Passwords never reach a log.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::EnvReader;

/// `KAFKA_SECURITY_PROTOCOL`: librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_ssl(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl FromStr for SecurityProtocol {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.to_ascii_lowercase().replace('-', "_").as_str() {
            "plaintext" => Ok(Self::Plaintext),
            "ssl" => Ok(Self::Ssl),
            "sasl_plaintext" => Ok(Self::SaslPlaintext),
            "sasl_ssl" => Ok(Self::SaslSsl),
            _ => Err("expected one of: plaintext, ssl, sasl_ssl, sasl_plaintext".into()),
        }
    }
}

/// `KAFKA_SASL_MECHANISM`: how the SASL username and password are presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's (and Kafka's) name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Ok(Self::Plain),
            "SCRAM-SHA-256" => Ok(Self::ScramSha256),
            "SCRAM-SHA-512" => Ok(Self::ScramSha512),
            _ => Err("expected one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512".into()),
        }
    }
}

/// SASL credentials. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    /// `KAFKA_SASL_MECHANISM`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`. Required with SASL.
    pub mechanism: SaslMechanism,
    /// `KAFKA_SASL_USERNAME`. Required with SASL.
    pub username: String,
    /// `KAFKA_SASL_PASSWORD`. Required with SASL; never logged.
    pub password: String,
}

impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The certificate files of an SSL connection. `Debug` hides the key password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SslFiles {
    /// `KAFKA_SSL_CA_LOCATION`: the CA certificate(s) the brokers' certificates are checked against (PEM).
    /// Default `<certificates>/ca.pem` when that file exists, else the system's CA store.
    pub ca_location: Option<PathBuf>,
    /// `KAFKA_SSL_CERTIFICATE_LOCATION`: the client certificate (PEM), for brokers that ask for one (mutual TLS).
    /// Default `<certificates>/client.pem` when that file exists.
    pub certificate_location: Option<PathBuf>,
    /// `KAFKA_SSL_KEY_LOCATION`: the client certificate's private key (PEM). Default `<certificates>/client.key`
    /// when that file exists.
    pub key_location: Option<PathBuf>,
    /// `KAFKA_SSL_KEY_PASSWORD`: the key's password, if it is encrypted. Never logged.
    pub key_password: Option<String>,
}

impl fmt::Debug for SslFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SslFiles")
            .field("ca_location", &self.ca_location)
            .field("certificate_location", &self.certificate_location)
            .field("key_location", &self.key_location)
            .field(
                "key_password",
                &self.key_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Kafka transport security: the protocol, SASL credentials and SSL files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaSecurity {
    /// `KAFKA_SECURITY_PROTOCOL`: `plaintext`, `ssl`, `sasl_ssl` or `sasl_plaintext`. Default `plaintext`.
    pub protocol: SecurityProtocol,
    /// With `sasl_*`.
    pub sasl: Option<SaslCredentials>,
    /// With `ssl` and `sasl_ssl`.
    pub ssl: SslFiles,
}

/// The variables read here, to tell an operator which ones a plaintext setup ignores.
const SASL_VARS: [&str; 3] = [
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
];

impl KafkaSecurity {
    /// Reads `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_*` and `HERALD_CERTIFICATES_DIR`, recording
    /// every problem (a missing credential, a certificate file that does not exist) in `env`.
    pub fn read(env: &mut EnvReader) -> Self {
        let protocol = env.parse("KAFKA_SECURITY_PROTOCOL", SecurityProtocol::Plaintext);
        // `KAFKA_PROPERTY_SECURITY_PROTOCOL` (the raw passthrough) may be what chose SASL or SSL.
        let passthrough = env.raw("KAFKA_PROPERTY_SECURITY_PROTOCOL").is_some();
        let sasl = if protocol.uses_sasl() {
            let mechanism = match env.raw("KAFKA_SASL_MECHANISM").map(str::parse) {
                Some(Ok(mechanism)) => Some(mechanism),
                Some(Err(e)) => {
                    env.problem("KAFKA_SASL_MECHANISM", e);
                    None
                }
                None => {
                    env.problem(
                        "KAFKA_SASL_MECHANISM",
                        format!(
                            "is required with KAFKA_SECURITY_PROTOCOL={}: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                            protocol.as_str()
                        ),
                    );
                    None
                }
            };
            let mut required = |key: &str| {
                let value = env.optional_string(key);
                if value.is_none() {
                    env.problem(
                        key,
                        format!(
                            "is required with KAFKA_SECURITY_PROTOCOL={}",
                            protocol.as_str()
                        ),
                    );
                }
                value
            };
            let username = required("KAFKA_SASL_USERNAME");
            let password = required("KAFKA_SASL_PASSWORD");
            match (mechanism, username, password) {
                (Some(mechanism), Some(username), Some(password)) => Some(SaslCredentials {
                    mechanism,
                    username,
                    password,
                }),
                _ => None,
            }
        } else {
            if !passthrough {
                for key in SASL_VARS {
                    if env.raw(key).is_some() {
                        env.problem(
                            key,
                            format!(
                                "is set but KAFKA_SECURITY_PROTOCOL is {}: set it to sasl_ssl",
                                protocol.as_str()
                            ),
                        );
                    }
                }
            }
            None
        };
        let ssl = if protocol.uses_ssl() {
            let dir = PathBuf::from(env.string("HERALD_CERTIFICATES_DIR", "certificates"));
            let files = SslFiles {
                ca_location: file(env, "KAFKA_SSL_CA_LOCATION", &dir.join("ca.pem")),
                certificate_location: file(
                    env,
                    "KAFKA_SSL_CERTIFICATE_LOCATION",
                    &dir.join("client.pem"),
                ),
                key_location: file(env, "KAFKA_SSL_KEY_LOCATION", &dir.join("client.key")),
                key_password: env.optional_string("KAFKA_SSL_KEY_PASSWORD"),
            };
            if files.certificate_location.is_some() != files.key_location.is_some() {
                env.problem(
                    "KAFKA_SSL_CERTIFICATE_LOCATION",
                    "a client certificate and its key (KAFKA_SSL_KEY_LOCATION) go together",
                );
            }
            files
        } else {
            SslFiles::default()
        };
        Self {
            protocol,
            sasl,
            ssl,
        }
    }

    /// The librdkafka properties that carry this, to set before any `KAFKA_PROPERTY_*` passthrough (which wins).
    /// Empty for plaintext.
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.protocol == SecurityProtocol::Plaintext {
            return out;
        }
        out.push(("security.protocol", self.protocol.as_str().to_owned()));
        if let Some(sasl) = &self.sasl {
            out.push(("sasl.mechanism", sasl.mechanism.as_str().to_owned()));
            out.push(("sasl.username", sasl.username.clone()));
            out.push(("sasl.password", sasl.password.clone()));
        }
        let path = |p: &Path| p.display().to_string();
        if let Some(ca) = &self.ssl.ca_location {
            out.push(("ssl.ca.location", path(ca)));
        }
        if let Some(certificate) = &self.ssl.certificate_location {
            out.push(("ssl.certificate.location", path(certificate)));
        }
        if let Some(key) = &self.ssl.key_location {
            out.push(("ssl.key.location", path(key)));
        }
        if let Some(password) = &self.ssl.key_password {
            out.push(("ssl.key.password", password.clone()));
        }
        out
    }
}

/// A certificate file: the variable's path, which must exist; or, when it is unset, `default` if it exists.
fn file(env: &mut EnvReader, key: &str, default: &Path) -> Option<PathBuf> {
    match env.optional_string(key).map(PathBuf::from) {
        Some(path) if path.is_file() => Some(path),
        Some(path) => {
            env.problem(key, format!("{} is not a readable file", path.display()));
            None
        }
        None => default.is_file().then(|| default.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<KafkaSecurity, String> {
        let mut env = EnvReader::from_pairs(pairs);
        let security = KafkaSecurity::read(&mut env);
        env.finish().map(|()| security).map_err(|e| e.to_string())
    }

    #[test]
    fn plaintext_by_default_sets_nothing() {
        let security = read(&[]).expect("valid");
        assert_eq!(security, KafkaSecurity::default());
        assert!(security.properties().is_empty());
    }

    #[test]
    fn sasl_ssl_with_scram_and_the_default_certificates_directory() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path();
        std::fs::write(dir.join("ca.pem"), "not checked here").expect("ca");
        let dir_text = dir.display().to_string();
        let security = read(&[
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "herald"),
            ("KAFKA_SASL_PASSWORD", "pa55-s3cret"),
            ("HERALD_CERTIFICATES_DIR", &dir_text),
        ])
        .expect("valid");
        let properties = security.properties();
        let get = |key: &str| {
            properties
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.username"), Some("herald"));
        assert_eq!(get("sasl.password"), Some("pa55-s3cret"));
        assert_eq!(
            get("ssl.ca.location"),
            Some(dir.join("ca.pem").display().to_string().as_str())
        );
        assert_eq!(get("ssl.certificate.location"), None, "no client.pem there");
        let shown = format!("{security:?}");
        assert!(!shown.contains("pa55-s3cret"), "{shown}");
    }

    #[test]
    fn every_problem_is_listed() {
        let err = read(&[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "GSSAPI"),
            ("KAFKA_SSL_CA_LOCATION", "/nonexistent/ca.pem"),
            ("KAFKA_SSL_KEY_LOCATION", "/nonexistent/client.key"),
        ])
        .expect_err("bad");
        for expected in [
            "KAFKA_SASL_MECHANISM: expected one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME: is required with KAFKA_SECURITY_PROTOCOL=sasl_ssl",
            "KAFKA_SASL_PASSWORD: is required",
            "KAFKA_SSL_CA_LOCATION: /nonexistent/ca.pem is not a readable file",
            "KAFKA_SSL_KEY_LOCATION: /nonexistent/client.key is not a readable file",
        ] {
            assert!(err.contains(expected), "{expected} missing from: {err}");
        }
        let err = read(&[("KAFKA_SECURITY_PROTOCOL", "tls")]).expect_err("bad");
        assert!(err.contains("KAFKA_SECURITY_PROTOCOL"), "{err}");
        let err = read(&[("KAFKA_SASL_USERNAME", "herald")]).expect_err("unused");
        assert!(
            err.contains("is set but KAFKA_SECURITY_PROTOCOL is plaintext"),
            "{err}"
        );
    }
}
