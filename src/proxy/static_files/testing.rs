//! What the static files' tests share: a docroot in a temp dir beside another tenant's
//! secret, and requests served from it through the kept-file cache, as the proxy serves them.

use super::confine::{open_docroot, Lookup};
use super::{open_beneath, serve, StaticRequest, DEFAULT_INDEX};
use crate::proxy::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Another tenant's file, beside the docroot.
pub const SECRET: &str = "TOP-SECRET-OF-ANOTHER-TENANT";

/// A temporary tree: `<base>/docroot` is served, `<base>/other/secret` is another tenant's
/// file. Removed on drop.
pub struct Tree {
    pub base: PathBuf,
    /// The docroot's key in the kept-file cache, unique to this tree.
    pub key: u64,
}

impl Tree {
    pub fn new(name: &str) -> Self {
        // Far above the proxy's route ids, so no route's kept files are mixed in.
        static N: AtomicU64 = AtomicU64::new(1 << 40);
        let key = N.fetch_add(1, Ordering::Relaxed);
        let base =
            std::env::temp_dir().join(format!("lodge-static-{}-{key}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("docroot")).unwrap();
        std::fs::create_dir_all(base.join("other")).unwrap();
        std::fs::write(base.join("other/secret"), SECRET).unwrap();
        Tree { base, key }
    }

    pub fn root(&self) -> PathBuf {
        self.base.join("docroot")
    }

    /// The docroot, opened.
    pub fn open_root(&self) -> OwnedFd {
        open_docroot(&self.root()).unwrap()
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    pub fn link(&self, rel: &str, target: impl AsRef<Path>) {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(target, path).unwrap();
    }

    pub fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.root().join(rel)).unwrap();
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// A response, its body read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// `rel` opened beneath the tree's docroot, as the proxy opens a PHP script.
pub fn open(tree: &Tree, rel: &str) -> Lookup {
    open_beneath(tree.open_root().as_fd(), tree.key, rel)
}

/// The response to `req` from the tree's docroot.
pub fn respond(tree: &Tree, req: &StaticRequest<'_>) -> Response<Body> {
    serve(tree.open_root().as_fd(), tree.key, req, DEFAULT_INDEX, None)
}

pub async fn request(tree: &Tree, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
    request_q(tree, method, path, None, headers).await
}

pub async fn request_q(
    tree: &Tree,
    method: Method,
    path: &str,
    query: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let req = StaticRequest {
        method: &method,
        path,
        query,
        headers: &map,
    };
    let (parts, body) = respond(tree, &req).into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(tree: &Tree, path: &str) -> Reply {
    request(tree, Method::GET, path, &[]).await
}

/// The entity tag the file at `path` has now.
pub fn expected_etag(path: &Path) -> String {
    let meta = std::fs::metadata(path).unwrap();
    format!(
        "\"{:x}-{:x}-{:x}\"",
        meta.mtime(),
        meta.mtime_nsec(),
        meta.size()
    )
}

/// A refusal (404 or 403) that shows nothing of the secret or of `/etc/passwd`.
pub fn assert_no_secret(r: &Reply, what: &str) {
    assert!(
        r.status == StatusCode::NOT_FOUND || r.status == StatusCode::FORBIDDEN,
        "{what}: {}",
        r.status
    );
    let body = String::from_utf8_lossy(&r.body);
    assert!(!body.contains(SECRET), "{what} leaked the secret");
    assert!(!body.contains("root:"), "{what} leaked /etc/passwd");
}
