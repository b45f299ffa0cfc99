//! Throwaway certificates for the TLS tests, made at test time with the
//! `openssl` command-line tool in a temp dir: a CA, a server certificate
//! for 127.0.0.1, ::1 and localhost, a client certificate, and the bad
//! ones (expired, not yet valid, for another name, from a second,
//! unrelated CA). ECDSA P-256 keys, PKCS#8 PEM. Two `openssl` runs a
//! certificate (key and request, then issue), some 0.2 s in all.
//!
//! Debian's OpenSSL 3.0 has no `x509 -not_before` (3.4+), so every leaf
//! is issued with `openssl ca`, whose `-startdate`/`-enddate` set any
//! validity period.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::proc::{self, TempDir};
use super::skip;

/// A certificate (chain of one) and its private key, as files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    pub fn cert_pem(&self) -> Vec<u8> {
        std::fs::read(&self.cert).unwrap()
    }

    pub fn key_pem(&self) -> Vec<u8> {
        std::fs::read(&self.key).unwrap()
    }

    /// The certificate then the key in one file, as HAProxy's `crt` wants.
    pub fn combined(&self, path: &Path) -> PathBuf {
        let mut all = self.cert_pem();
        all.extend_from_slice(&self.key_pem());
        std::fs::write(path, all).unwrap();
        path.to_path_buf()
    }

    /// The SHA-256 of the certificate's DER, as `openssl x509 -fingerprint`
    /// computes it.
    pub fn sha256(&self) -> [u8; 32] {
        let out = openssl(
            &[
                "x509",
                "-noout",
                "-fingerprint",
                "-sha256",
                "-in",
                &self.cert.display().to_string(),
            ],
            None,
        );
        let hex = out
            .trim()
            .split_once('=')
            .expect("sha256 Fingerprint=..")
            .1
            .replace(':', "");
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        digest
    }
}

/// The subject of [`Certs::client`].
pub const CLIENT_CN: &str = "client";
/// The organisation in every certificate's subject.
pub const ORG: &str = "sockserv tests";
/// The only name in [`Certs::wrong_name`].
pub const WRONG_NAME: &str = "example.org";

/// Every certificate the TLS tests use, in one temp dir (removed on drop).
pub struct Certs {
    pub dir: TempDir,
    /// The CA that issued server, client, expired, not_yet_valid and
    /// wrong_name (self-signed).
    pub ca: Pair,
    /// For 127.0.0.1, ::1 and localhost; serverAuth.
    pub server: Pair,
    /// CN=client, O=sockserv tests; clientAuth.
    pub client: Pair,
    /// Server and client use, valid in 2020 only.
    pub expired: Pair,
    /// Server and client use, valid from 2049 only.
    pub not_yet_valid: Pair,
    /// Server use, for example.org only.
    pub wrong_name: Pair,
    /// A second CA, unrelated to `ca`.
    pub other_ca: Pair,
    /// A server certificate as `server` (same names), issued by `other_ca`.
    pub other_server: Pair,
    /// A client certificate as `client`, issued by `other_ca`.
    pub other_client: Pair,
}

/// Whether the `openssl` tool runs here.
pub fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `openssl ARGS` (in `dir` if given), panics with its output on
/// failure, returns its stdout.
pub fn openssl(args: &[&str], dir: Option<&Path>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = proc::run(&mut cmd, Duration::from_secs(30), "openssl");
    proc::assert_success(&out, &format!("openssl {}", args.join(" ")));
    proc::stdout(&out)
}

const EXTENSIONS: &str = "\
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = DNS:client
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[both_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,IP:::1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[wrong_name_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:example.org
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
";

/// One CA's directory: its `openssl ca` database and config.
struct Authority {
    dir: PathBuf,
    pair: Pair,
}

impl Authority {
    fn new(root: &Path, name: &str, cn: &str) -> Authority {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("issued")).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        let config = format!(
            "[ca]\ndefault_ca = this_ca\n\n\
             [this_ca]\ndir = {dir}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir/issued\n\
             serial = $dir/serial\ncertificate = $dir/ca.pem\nprivate_key = $dir/ca.key\n\
             default_md = sha256\npolicy = any_name\nunique_subject = no\n\
             copy_extensions = none\npreserve = yes\nemail_in_dn = no\n\n\
             [any_name]\norganizationName = optional\ncommonName = supplied\n\n\
             [req]\ndistinguished_name = req_dn\nprompt = no\n\n[req_dn]\nCN = unused\n\n\
             {EXTENSIONS}",
            dir = dir.display()
        );
        std::fs::write(dir.join("openssl.cnf"), config).unwrap();
        let pair = Pair {
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
        };
        openssl(
            &[
                "req",
                "-config",
                "openssl.cnf",
                "-new",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-noenc",
                "-keyout",
                "ca.key",
                "-subj",
                &format!("/O={ORG}/CN={cn}"),
                "-days",
                "3650",
                "-extensions",
                "ca_ext",
                "-out",
                "ca.pem",
            ],
            Some(&dir),
        );
        Authority { dir, pair }
    }

    /// A key and a certificate for `cn` with the extensions of section
    /// `ext`, valid from `start` to `end` (YYMMDDHHMMSSZ; `None`: now and
    /// two days from now).
    fn issue(&self, name: &str, cn: &str, ext: &str, dates: Option<(&str, &str)>) -> Pair {
        let pair = Pair {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        let csr = format!("{name}.csr");
        openssl(
            &[
                "req",
                "-config",
                "openssl.cnf",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-noenc",
                "-keyout",
                &pair.key.display().to_string(),
                "-subj",
                &format!("/O={ORG}/CN={cn}"),
                "-out",
                &csr,
            ],
            Some(&self.dir),
        );
        let mut args = vec![
            "ca",
            "-batch",
            "-notext",
            "-config",
            "openssl.cnf",
            "-extensions",
            ext,
            "-in",
            &csr,
            "-out",
        ];
        let out = pair.cert.display().to_string();
        args.push(&out);
        match dates {
            Some((start, end)) => args.extend(["-startdate", start, "-enddate", end]),
            None => args.extend(["-days", "2"]),
        }
        openssl(&args, Some(&self.dir));
        pair
    }
}

impl Certs {
    /// Makes every certificate, or says why not (`skip::required`: CI
    /// installs openssl) and returns `None`.
    pub fn make(test: &str) -> Option<Certs> {
        if !have_openssl() {
            skip::required(
                test,
                "the openssl tool is missing (apt-get install openssl)",
            );
            return None;
        }
        let dir = TempDir::new("certs");
        let ca = Authority::new(dir.path(), "ca", "sockserv test CA");
        let other = Authority::new(dir.path(), "other_ca", "unrelated test CA");
        Some(Certs {
            server: ca.issue("server", "server", "server_ext", None),
            client: ca.issue("client", CLIENT_CN, "client_ext", None),
            expired: ca.issue(
                "expired",
                "expired",
                "both_ext",
                Some(("200101000000Z", "200102000000Z")),
            ),
            not_yet_valid: ca.issue(
                "not_yet_valid",
                "not yet valid",
                "both_ext",
                Some(("490101000000Z", "491231000000Z")),
            ),
            wrong_name: ca.issue("wrong_name", WRONG_NAME, "wrong_name_ext", None),
            other_server: other.issue("server", "server", "server_ext", None),
            other_client: other.issue("client", CLIENT_CN, "client_ext", None),
            ca: ca.pair,
            other_ca: other.pair,
            dir,
        })
    }
}
