//! TLS for the front proxy: one certificate per vhost, chosen by SNI.
//!
//! The root agent writes each vhost's certificate chain and private key as PEM files the proxy
//! (running as `lodge-www`) can read, and names them in the routes snapshot. The proxy turns
//! the snapshot's entries into a [`CertStore`] with [`CertStore::load`] and hands it to its
//! [`SniResolver`] with [`SniResolver::replace`], which swaps the whole table at once: a
//! handshake sees either the old table or the new one, never a mix.
//!
//! The rules this module enforces, and why:
//!
//! * **No SNI, or an unknown name, fails the handshake.** There is no "default certificate":
//!   handing an unknown host some tenant's certificate would tell anyone who asks which
//!   sites share the server and pair a stranger's name with a tenant's certificate. A client
//!   that doesn't send SNI in the 2020s is not one we serve over HTTPS.
//! * **The Host header must agree with SNI** ([`sni_matches_host`]). Otherwise a client could
//!   open a connection for tenant A (whose certificate it accepted) and send requests for
//!   tenant B over it; the proxy answers 421 Misdirected Request instead, which also makes
//!   browsers that coalesce HTTP/2 connections retry on a fresh one.
//! * **A broken entry never takes the others down.** [`CertStore::load`] skips and reports a
//!   bad file or a mismatched key; every other vhost keeps working.
//! * **Certificates and keys must belong together**: the proxy loads a pair through the same
//!   check (`crate::certs`) the panel applies when a certificate is uploaded, so a mistake
//!   is reported to the tenant at once rather than as failed handshakes later.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::certs::{certified_key_from_pem, provider};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The largest certificate or key file [`CertStore::load`] reads. Real chains are a few KiB;
/// the cap only keeps a corrupt or runaway file from costing the proxy unbounded memory.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// The form host names are kept in ([`super::host::normalize`]: `a.example.` and
/// `A.example` are `a.example`; SNI never carries the dot, a Host header might).
fn normalize_name(name: &str) -> String {
    super::host::normalize(name).into_owned()
}

/// The certificates the proxy serves: host name (exact, normalized as by `normalize_name`) →
/// certificate chain and signing key. There are no wildcard entries: every vhost name is
/// listed.
///
/// Cloning is cheap (the table is behind an `Arc`) and a store never changes once built; the
/// proxy replaces the whole store instead (see [`SniResolver::replace`]).
#[derive(Clone, Default)]
pub struct CertStore {
    by_name: Arc<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for CertStore {
    // Names only: the keys are nobody's business, and the chains would drown the output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.names().collect();
        names.sort_unstable();
        f.debug_struct("CertStore").field("names", &names).finish()
    }
}

impl CertStore {
    /// Builds a store from the routes snapshot's entries: `(host names, certificate chain PEM
    /// file, private key PEM file)`.
    ///
    /// Returns the store and one message per problem. A bad entry (unreadable file, no
    /// certificate, no key, a key that doesn't match the certificate, no names) is skipped and
    /// reported, never fatal: one tenant's broken upload must not take every other site off
    /// HTTPS. If two entries claim the same name, the first keeps it and the second's claim is
    /// reported; which tenant owns a name is the store's business, so this only happens if the
    /// snapshot is inconsistent, and keeping the first is at least deterministic.
    ///
    /// This reads files synchronously; call it from `spawn_blocking` (or accept the short
    /// stall) on a runtime thread.
    pub fn load(entries: &[(Vec<String>, PathBuf, PathBuf)]) -> (CertStore, Vec<String>) {
        let mut by_name: HashMap<String, Arc<CertifiedKey>> = HashMap::new();
        let mut errors = Vec::new();
        for (names, cert_path, key_path) in entries {
            let label = if names.is_empty() {
                format!("entry for {}", cert_path.display())
            } else {
                names.join(", ")
            };
            if names.is_empty() {
                errors.push(format!("{label}: no host names"));
                continue;
            }
            let key = match load_files(cert_path, key_path) {
                Ok(key) => Arc::new(key),
                Err(e) => {
                    errors.push(format!("{label}: {e}"));
                    continue;
                }
            };
            for name in names {
                let name = normalize_name(name);
                if by_name.contains_key(&name) {
                    errors.push(format!(
                        "{label}: {name} already has a certificate from another entry; ignored"
                    ));
                    continue;
                }
                by_name.insert(name, key.clone());
            }
        }
        let store = CertStore {
            by_name: Arc::new(by_name),
        };
        (store, errors)
    }

    /// The certificate for `name` (compared case-insensitively, trailing dot ignored), if any.
    pub fn get(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.by_name.get(&*super::host::normalize(name)).cloned()
    }

    /// The names this store has certificates for (normalized), in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// Stores built by hand, and their size, for tests.
#[cfg(test)]
impl CertStore {
    /// A store serving one certificate (PEM chain and key) for one name. Meant for tests and
    /// tools; the proxy uses [`CertStore::load`].
    pub fn from_pem(name: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<CertStore> {
        let key = certified_key_from_pem(cert_pem.as_bytes(), key_pem.as_bytes())
            .map_err(anyhow::Error::msg)?;
        let mut by_name = HashMap::new();
        by_name.insert(normalize_name(name), Arc::new(key));
        Ok(CertStore {
            by_name: Arc::new(by_name),
        })
    }

    /// How many names have a certificate.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no name has a certificate.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Reads at most [`MAX_PEM_FILE`] bytes of `path`, failing if there is more.
fn read_pem_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(format!(
            "{what} {}: larger than {MAX_PEM_FILE} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Loads one entry's certificate chain and key files into a checked [`CertifiedKey`].
fn load_files(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let cert_pem = read_pem_file(cert_path, "certificate")?;
    let key_pem = read_pem_file(key_path, "key")?;
    certified_key_from_pem(&cert_pem, &key_pem)
}

/// Picks each handshake's certificate by SNI from the current [`CertStore`], which
/// [`SniResolver::replace`] swaps atomically when the routes snapshot changes.
///
/// No SNI, or a name with no certificate, resolves to nothing and the handshake fails: there
/// is deliberately no fallback certificate, because an unknown host must never be answered
/// with some tenant's certificate.
pub struct SniResolver {
    /// The current table. A lookup holds the read lock only long enough to clone the `Arc`,
    /// so a replacement never waits on a handshake and a handshake never sees a half-built
    /// table; handshakes that already cloned the old table finish with it.
    current: RwLock<Arc<CertStore>>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("current", &self.current())
            .finish()
    }
}

impl SniResolver {
    /// A resolver serving `store`.
    pub fn new(store: CertStore) -> Self {
        SniResolver {
            current: RwLock::new(Arc::new(store)),
        }
    }

    /// Serves `store` from now on. Handshakes already under way finish with the store they
    /// started with; established connections keep their certificate (TLS never re-presents
    /// one).
    pub fn replace(&self, store: CertStore) {
        let store = Arc::new(store);
        // A poisoned lock only means a panic happened while it was held; the only writes are
        // whole-value assignments, which can't be left half done, so the value is still good.
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(PoisonError::into_inner),
            store,
        );
        // Dropped here, outside the lock: freeing a large table shouldn't stall lookups.
        drop(old);
    }

    /// The store currently served.
    pub fn current(&self) -> Arc<CertStore> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The certificate a handshake with this SNI name gets: an exact (case-insensitive) match
    /// or nothing. `None` for no SNI at all. This is [`ResolvesServerCert::resolve`] without
    /// the `ClientHello`, which tests and diagnostics can't build.
    pub fn lookup(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = server_name?;
        let found = self.current().get(name);
        if found.is_none() {
            // Debug, not warn: scanners probe with random and absent names all day.
            tracing::debug!(
                sni = name,
                "no certificate for this name; refusing handshake"
            );
        }
        found
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if client_hello.server_name().is_none() {
            tracing::debug!("TLS client sent no SNI; refusing handshake");
        }
        self.lookup(client_hello.server_name())
    }
}

/// The proxy's TLS server configuration: certificates from `resolver`, ALPN offering `h2`
/// then `http/1.1` (rustls picks the first of ours the client also offers, so h2 wins whenever
/// the client speaks it), no client certificates, and rustls' defaults for the rest: TLS 1.2
/// and 1.3, an in-memory session cache for resumption, and no 0-RTT data (early data can be
/// replayed, and nothing here needs the round trip it saves).
///
/// After the handshake, the negotiated SNI name is
/// `tls_stream.get_ref().1.server_name()`; pass it to [`sni_matches_host`] for each request.
pub fn server_config(resolver: Arc<SniResolver>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        // Only fails if the provider supports none of the default versions; ring supports
        // both, so this is a build-time fact, not a runtime condition.
        .expect("the ring provider supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Whether a request's Host (or HTTP/2 `:authority`) agrees with the connection's SNI name:
/// equal after dropping the port, ignoring ASCII case and a trailing dot. Without SNI (plain
/// HTTP) any host matches; routing by Host decides the rest. The proxy answers 421
/// Misdirected Request when this is false, so a connection set up for one tenant's name can't
/// be used to reach another tenant.
pub fn sni_matches_host(sni: Option<&str>, host: &str) -> bool {
    let Some(sni) = sni else {
        return true;
    };
    let host = super::host::strip_port(host);
    !host.is_empty() && super::host::same_name(host, sni)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::self_signed;
    use rustls::pki_types::CertificateDer;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A fresh, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "lodge-tls-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// The DER of the first certificate in `pem`.
    fn der_of(pem: &str) -> CertificateDer<'static> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
    }

    #[test]
    fn self_signed_pem_loads_into_a_store() {
        let (cert, key) = self_signed(&names(&["a.example", "www.a.example"])).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY-----"));

        let dir = TempDir::new();
        let cert_path = dir.write("a.crt", &cert);
        let key_path = dir.write("a.key", &key);
        let (store, errors) =
            CertStore::load(&[(names(&["a.example", "WWW.A.Example."]), cert_path, key_path)]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(store.len(), 2);
        let loaded = store.get("a.example").unwrap();
        assert_eq!(loaded.cert[0], der_of(&cert));
        // Both names share one key object, and lookups normalize case and the trailing dot.
        assert!(Arc::ptr_eq(&loaded, &store.get("www.a.example").unwrap()));
        assert!(store.get("A.EXAMPLE.").is_some());
    }

    #[test]
    fn resolver_picks_by_name_and_refuses_unknown() {
        let (cert_a, key_a) = self_signed(&names(&["a.example"])).unwrap();
        let (cert_b, key_b) = self_signed(&names(&["b.example"])).unwrap();
        let dir = TempDir::new();
        let entries = [
            (
                names(&["a.example"]),
                dir.write("a.crt", &cert_a),
                dir.write("a.key", &key_a),
            ),
            (
                names(&["b.example"]),
                dir.write("b.crt", &cert_b),
                dir.write("b.key", &key_b),
            ),
        ];
        let (store, errors) = CertStore::load(&entries);
        assert!(errors.is_empty(), "{errors:?}");
        let resolver = SniResolver::new(store);

        let a = resolver.lookup(Some("a.example")).unwrap();
        assert_eq!(a.cert[0], der_of(&cert_a));
        let b = resolver.lookup(Some("B.example")).unwrap();
        assert_eq!(b.cert[0], der_of(&cert_b));
        assert!(resolver.lookup(Some("unknown.example")).is_none());
        assert!(resolver.lookup(Some("example")).is_none());
        assert!(resolver.lookup(None).is_none());

        // Replacing swaps the whole table.
        resolver.replace(CertStore::from_pem("c.example", &cert_a, &key_a).unwrap());
        assert!(resolver.lookup(Some("a.example")).is_none());
        assert!(resolver.lookup(Some("c.example")).is_some());
        assert!(format!("{resolver:?}").contains("c.example"));
    }

    #[test]
    fn broken_entries_are_reported_and_skipped() {
        let (cert_a, key_a) = self_signed(&names(&["a.example"])).unwrap();
        let (cert_b, key_b) = self_signed(&names(&["b.example"])).unwrap();
        let dir = TempDir::new();
        let a_crt = dir.write("a.crt", &cert_a);
        let a_key = dir.write("a.key", &key_a);
        let entries = [
            // Good.
            (names(&["a.example"]), a_crt.clone(), a_key.clone()),
            // Missing key file.
            (
                names(&["missing.example"]),
                a_crt.clone(),
                dir.0.join("nope.key"),
            ),
            // Garbage certificate.
            (
                names(&["garbage.example"]),
                dir.write("garbage.crt", "not a certificate\n"),
                a_key.clone(),
            ),
            // Key from another certificate.
            (
                names(&["mismatch.example"]),
                dir.write("b.crt", &cert_b),
                a_key.clone(),
            ),
            // Key file holding a certificate instead.
            (
                names(&["nokey.example"]),
                a_crt.clone(),
                dir.write("cert-as-key.key", &cert_b),
            ),
            // No names.
            (Vec::new(), a_crt.clone(), a_key.clone()),
            // A name already taken by the first entry; its other name still loads.
            (
                names(&["A.example", "b.example"]),
                a_crt.clone(),
                dir.write("b.key", &key_b),
            ),
        ];
        let (store, errors) = CertStore::load(&entries);
        assert_eq!(errors.len(), 6, "{errors:#?}");
        for name in [
            "missing.example",
            "garbage.example",
            "mismatch.example",
            "nokey.example",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(name)),
                "no error for {name}: {errors:#?}"
            );
            assert!(store.get(name).is_none());
        }
        assert!(errors.iter().any(|e| e.contains("no host names")));
        assert!(errors.iter().any(|e| e.contains("does not belong")));
        // The last entry's key matches b.crt, not a.crt: the whole entry is rejected.
        assert!(store.get("b.example").is_none());
        assert_eq!(
            store.get("a.example").unwrap().cert[0],
            der_of(&cert_a),
            "the first entry keeps its name"
        );
        assert_eq!(store.len(), 1);

        // A duplicate claim by an otherwise good entry is reported and the rest loads.
        let b_crt = dir.write("b2.crt", &cert_b);
        let b_key = dir.write("b2.key", &key_b);
        let (store, errors) = CertStore::load(&[
            (names(&["a.example"]), a_crt, a_key),
            (names(&["a.example", "b.example"]), b_crt, b_key),
        ]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("already has a certificate"));
        assert_eq!(store.get("a.example").unwrap().cert[0], der_of(&cert_a));
        assert_eq!(store.get("b.example").unwrap().cert[0], der_of(&cert_b));
    }

    #[test]
    fn oversized_files_are_refused() {
        let dir = TempDir::new();
        let big = "x".repeat(MAX_PEM_FILE as usize + 1);
        let path = dir.write("big.crt", &big);
        let (store, errors) = CertStore::load(&[(names(&["a.example"]), path.clone(), path)]);
        assert!(store.is_empty());
        assert!(errors[0].contains("larger than"), "{errors:?}");
    }

    #[test]
    fn host_must_match_sni() {
        assert!(sni_matches_host(Some("a.example"), "a.example"));
        assert!(sni_matches_host(Some("a.example"), "A.Example:8443"));
        assert!(sni_matches_host(Some("a.example"), "a.example."));
        assert!(sni_matches_host(Some("a.example"), "a.example:"));
        assert!(!sni_matches_host(Some("a.example"), "b.example"));
        assert!(!sni_matches_host(Some("a.example"), "a.example.evil"));
        assert!(!sni_matches_host(Some("a.example"), "a.example:x"));
        assert!(!sni_matches_host(Some("a.example"), ""));
        assert!(!sni_matches_host(Some("a.example"), "[::1]:443"));
        // Without SNI (plain HTTP) anything goes; routing decides.
        assert!(sni_matches_host(None, "b.example:80"));
    }

    /// What a client saw of a finished handshake.
    struct Seen {
        peer_cert: CertificateDer<'static>,
        alpn: Option<Vec<u8>>,
        server_sni: Option<String>,
    }

    /// Runs one TLS handshake against `config` over loopback with the given SNI and ALPN
    /// offer, trusting `roots`, and exchanges a byte each way to prove the session works.
    async fn handshake(
        config: Arc<rustls::ServerConfig>,
        roots: &[&str],
        sni: &str,
        alpn: &[&[u8]],
    ) -> Result<Seen, String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let server = async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            tls.write_all(&byte).await.map_err(|e| e.to_string())?;
            tls.shutdown().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(tls.get_ref().1.server_name().map(str::to_owned))
        };

        let mut root_store = rustls::RootCertStore::empty();
        for pem in roots {
            root_store.add(der_of(pem)).unwrap();
        }
        let mut client_config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(root_store)
            .with_no_client_auth();
        client_config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let server_name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let client = async move {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let mut tls = connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"x").await.map_err(|e| e.to_string())?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
            assert_eq!(&byte, b"x");
            let (_, conn) = tls.get_ref();
            Ok::<_, String>((
                conn.peer_certificates().unwrap()[0].clone(),
                conn.alpn_protocol().map(<[u8]>::to_vec),
            ))
        };

        let both = async { tokio::join!(server, client) };
        let (server, client) = tokio::time::timeout(std::time::Duration::from_secs(20), both)
            .await
            .expect("handshake timed out");
        let (peer_cert, alpn) = client?;
        let server_sni = server?;
        Ok(Seen {
            peer_cert,
            alpn,
            server_sni,
        })
    }

    #[tokio::test]
    async fn tls_handshake_end_to_end() {
        let (cert_a, key_a) = self_signed(&names(&["a.example"])).unwrap();
        let (cert_b, key_b) = self_signed(&names(&["b.example"])).unwrap();
        let (cert_a2, key_a2) = self_signed(&names(&["a.example"])).unwrap();
        let roots = [cert_a.as_str(), cert_b.as_str(), cert_a2.as_str()];

        let dir = TempDir::new();
        let (store, errors) = CertStore::load(&[
            (
                names(&["a.example"]),
                dir.write("a.crt", &cert_a),
                dir.write("a.key", &key_a),
            ),
            (
                names(&["b.example"]),
                dir.write("b.crt", &cert_b),
                dir.write("b.key", &key_b),
            ),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        let resolver = Arc::new(SniResolver::new(store));
        let config = server_config(resolver.clone());

        // Each name gets its own certificate; h2 wins when offered, http/1.1 otherwise.
        let seen = handshake(config.clone(), &roots, "a.example", &[b"h2", b"http/1.1"])
            .await
            .unwrap();
        assert_eq!(seen.peer_cert, der_of(&cert_a));
        assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(seen.server_sni.as_deref(), Some("a.example"));
        assert!(sni_matches_host(
            seen.server_sni.as_deref(),
            "a.example:443"
        ));

        let seen = handshake(config.clone(), &roots, "b.example", &[b"http/1.1"])
            .await
            .unwrap();
        assert_eq!(seen.peer_cert, der_of(&cert_b));
        assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));

        let seen = handshake(config.clone(), &roots, "b.example", &[])
            .await
            .unwrap();
        assert_eq!(seen.peer_cert, der_of(&cert_b));
        assert_eq!(seen.alpn, None);

        // An unknown name gets no certificate at all, not someone else's.
        let err = handshake(config.clone(), &roots, "unknown.example", &[b"h2"])
            .await
            .err()
            .expect("a handshake for an unknown name must fail");
        // The server refuses (rustls sends access_denied when the resolver has nothing); the
        // client never got as far as judging a certificate.
        assert!(err.contains("AccessDenied"), "{err}");

        // replace() applies to new connections, through the same config.
        resolver.replace(CertStore::from_pem("a.example", &cert_a2, &key_a2).unwrap());
        let seen = handshake(config.clone(), &roots, "a.example", &[b"h2"])
            .await
            .unwrap();
        assert_eq!(seen.peer_cert, der_of(&cert_a2));
        assert!(handshake(config, &roots, "b.example", &[b"h2"])
            .await
            .is_err());
    }
}
