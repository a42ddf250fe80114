//! `admission dev-cert`: a throw-away CA and a serving certificate for running the server
//! locally (localhost, 127.0.0.1, ::1 by default), with an explicit validity window.
//!
//! Not for clusters: the `certs` crate owns production certificates and rotation.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

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

/// Generates a CA (valid `days` days, path length 0) and a serving certificate for `hosts`
/// (DNS names or IP addresses) signed by it.
pub fn generate(hosts: &[String], days: u32) -> Result<DevCert, Error> {
    // Valid from one day before today (clock skew) until `days` days after today; rcgen's
    // default would run to the year 4096.
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let today = rcgen::date_time_ymd(
        i32::from(today.year()),
        today.month().unsigned_abs(),
        today.day().unsigned_abs(),
    );
    let day = std::time::Duration::from_secs(86_400);
    let (not_before, not_after) = (today - day, today + day * days);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "db-operator admission dev CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(hosts.to_vec())?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        hosts.first().map_or("localhost", String::as_str),
    );
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let cert = leaf.signed_by(&key, &issuer)?;

    Ok(DevCert {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
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
                31 * 86_400,
                "one day of skew allowance plus 30 days"
            );
            let now = jiff::Timestamp::now().as_second();
            assert!(validity.not_before.timestamp() < now && now < validity.not_after.timestamp());
        }
    }

    #[test]
    fn generated_files_load_as_server_tls_material() {
        let dir = tempfile::tempdir().unwrap();
        let hosts: Vec<String> = DEFAULT_HOSTS.iter().map(|h| (*h).to_owned()).collect();
        let files = write(dir.path(), &generate(&hosts, 30).unwrap()).unwrap();
        crate::tls::load_certified_key(&files.cert, &files.key).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
