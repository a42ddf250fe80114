//! `admission dev-cert`: a throw-away CA and a serving certificate for running the server
//! locally (localhost, 127.0.0.1, ::1 by default), with an explicit validity window.
//!
//! Not for clusters: the `certs` crate owns production certificates and rotation.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use certs::generate::{generate_ca, issue_serving_cert, ServingNames};

use crate::Error;

/// Default subject alternative names of the dev serving certificate.
pub const DEFAULT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// PEM material of a dev CA and the serving certificate it signed.
#[derive(Clone, Debug)]
pub struct DevCert {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Where [`write`] put the files.
#[derive(Clone, Debug)]
pub struct DevCertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Generates a CA and a serving certificate for `hosts` (DNS names or IP addresses) signed by
/// it, both valid for `days` days (from a few minutes ago, for clock skew), with the same
/// generator the `certs` crate uses for the webhook's real certificates (ECDSA P-256).
pub fn generate(hosts: &[String], days: u32) -> Result<DevCert, Error> {
    let (ips, dns): (Vec<&String>, Vec<&String>) =
        hosts.iter().partition(|h| h.parse::<IpAddr>().is_ok());
    let names = ServingNames {
        dns: dns.into_iter().cloned().collect(),
        ips: ips.into_iter().filter_map(|h| h.parse().ok()).collect(),
    };
    let now = jiff::Timestamp::now();
    let validity = Duration::from_secs(86_400 * u64::from(days));
    let ca = generate_ca("db-operator admission dev", now, validity)?;
    let leaf = issue_serving_cert(&ca, &names, now, validity)?;
    Ok(DevCert {
        ca_pem: ca.cert_pem,
        cert_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
    })
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), Error> {
    let io = |source| Error::Io {
        context: format!("failed to write {}", path.display()),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut file, contents.as_bytes()).map_err(io)
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`, creating it if needed.
pub fn write(dir: &Path, cert: &DevCert) -> Result<DevCertFiles, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        context: format!("failed to create {}", dir.display()),
        source,
    })?;
    let files = DevCertFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    write_file(&files.ca, &cert.ca_pem, false)?;
    write_file(&files.cert, &cert.cert_pem, false)?;
    write_file(&files.key, &cert.key_pem, true)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_window_is_explicit() {
        let generated = generate(&["localhost".to_owned()], 30).unwrap();
        for pem in [&generated.ca_pem, &generated.cert_pem] {
            let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
            let cert = pem.parse_x509().unwrap();
            let validity = cert.validity();
            let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
            assert_eq!(
                lifetime,
                30 * 86_400 + certs::generate::CLOCK_SKEW.as_secs() as i64,
                "clock-skew allowance plus 30 days"
            );
            let now = jiff::Timestamp::now().as_second();
            assert!(validity.not_before.timestamp() < now && now < validity.not_after.timestamp());
        }
    }

    #[test]
    fn ip_hosts_become_ip_names_and_the_leaf_chains_to_the_ca() {
        let hosts: Vec<String> = DEFAULT_HOSTS.iter().map(|h| (*h).to_owned()).collect();
        let generated = generate(&hosts, 2).unwrap();
        let info = certs::pem::cert_info_pem(&generated.cert_pem).unwrap();
        assert_eq!(info.dns_names, vec!["localhost".to_owned()]);
        assert_eq!(info.ip_addresses.len(), 2, "{:?}", info.ip_addresses);
        assert!(certs::generate::verifies_against(
            &generated.cert_pem,
            &generated.ca_pem,
            jiff::Timestamp::now()
        ));
    }

    #[test]
    fn generated_files_load_as_server_tls_material() {
        let dir = tempfile::tempdir().unwrap();
        let hosts: Vec<String> = DEFAULT_HOSTS.iter().map(|h| (*h).to_owned()).collect();
        let files = write(dir.path(), &generate(&hosts, 30).unwrap()).unwrap();
        crate::tls::reloading_resolver(&files.cert, &files.key).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
