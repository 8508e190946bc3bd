//! Certificates for tests, made with the `openssl` CLI: a private CA that issues server
//! certificates (what an operator's internal registry has), and self-signed signing
//! certificates (what a token server's key comes with).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::process::run;

const OPENSSL_LIMIT: Duration = Duration::from_secs(60);

/// A certificate and its private key, both PEM files.
#[derive(Clone, Debug)]
pub struct KeyPair {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The unencrypted private key (PEM).
    pub key: PathBuf,
}

impl KeyPair {
    /// The certificate's DER bytes as standard base64 (the form of a JWT `x5c` entry).
    pub fn cert_der_base64(&self) -> anyhow::Result<String> {
        pem_der_base64(&std::fs::read_to_string(&self.cert)?)
    }
}

/// A private certificate authority in a directory of its own.
#[derive(Debug)]
pub struct TestCa {
    /// The CA's certificate and key; `ca.cert` is what clients are told to trust.
    pub ca: KeyPair,
    dir: PathBuf,
}

impl TestCa {
    /// Creates a CA named `name` under `dir/name/`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let ca = KeyPair {
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
        };
        openssl(
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", &format!("/CN={name}")])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(&ca.key)
                .arg("-out")
                .arg(&ca.cert),
        )?;
        Ok(TestCa { ca, dir })
    }

    /// Issues a server certificate for `sans` (`IP:127.0.0.1`, `DNS:name`, ...).
    pub fn issue_server(&self, name: &str, sans: &[&str]) -> anyhow::Result<KeyPair> {
        let pair = KeyPair {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        let csr = self.dir.join(format!("{name}.csr"));
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        )?;
        openssl(
            Command::new("openssl")
                .args(["req", "-new", "-newkey", "rsa:2048", "-nodes"])
                .args(["-subj", &format!("/CN={name}")])
                .arg("-keyout")
                .arg(&pair.key)
                .arg("-out")
                .arg(&csr),
        )?;
        openssl(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(&self.ca.cert)
                .arg("-CAkey")
                .arg(&self.ca.key)
                .args(["-set_serial", &serial()])
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&pair.cert),
        )?;
        Ok(pair)
    }
}

/// A self-signed RSA certificate named `name` in `dir` (e.g. a token signing key).
pub fn self_signed(dir: &Path, name: &str) -> anyhow::Result<KeyPair> {
    std::fs::create_dir_all(dir)?;
    let pair = KeyPair {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    openssl(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", &format!("/CN={name}")])
            .arg("-keyout")
            .arg(&pair.key)
            .arg("-out")
            .arg(&pair.cert),
    )?;
    Ok(pair)
}

/// The DER bytes of the first certificate in `pem`, as standard base64: the PEM body
/// with its line breaks removed.
pub fn pem_der_base64(pem: &str) -> anyhow::Result<String> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(begin).context("no certificate in PEM text")? + begin.len();
    let len = pem[start..]
        .find("-----END CERTIFICATE-----")
        .context("unterminated certificate in PEM text")?;
    Ok(pem[start..start + len]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect())
}

fn openssl(cmd: &mut Command) -> anyhow::Result<()> {
    run(cmd, OPENSSL_LIMIT)?;
    Ok(())
}

fn serial() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(1);
    format!("0x{nanos:x}")
}
