//! Bearer-token authentication. The token is 32 random bytes in hex, kept in a file
//! (default `<state dir>/token`) created with mode 0600 on the first start and reused
//! after. Every request except `GET /v1/health` must carry
//! `Authorization: Bearer <token>`; otherwise the answer is 401 `unauthorized`. A
//! connection that carried a request with the right token is marked authenticated.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::errors::ApiError;

/// The token a request must present.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    pub fn new(t: impl Into<Arc<str>>) -> Self {
        Token(t.into())
    }

    /// Compares in time independent of where the first difference is.
    fn matches(&self, presented: &[u8]) -> bool {
        let want = self.0.as_bytes();
        presented.len() == want.len()
            && presented
                .iter()
                .zip(want)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Why the token file could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot create the token file {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the token file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {} has mode {mode:o}: others may read it; `chmod 600` it (or remove it to get a new token)", path.display())]
    Readable { path: PathBuf, mode: u32 },
    #[error("the token file {} is owned by uid {owner} (mode {mode:o}), not by you (uid {uid}): that user knows the token; remove it (a new token is made on start) or set KILN_STATE_DIR to a directory you own", path.display())]
    NotOwned {
        path: PathBuf,
        owner: u32,
        mode: u32,
        uid: u32,
    },
    #[error("the token file {} does not hold a token (64 hex digits); remove it to get a new one", path.display())]
    NotAToken { path: PathBuf },
    #[error("cannot get random bytes for a token: {0}")]
    Random(std::io::Error),
}

/// Reads the token file, or creates it (mode 0600) with a fresh token. A token file
/// that others may read, or that does not hold 64 hex digits, is refused.
pub fn load_or_create(path: &Path) -> Result<String, TokenError> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            let token = fresh_token()?;
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|source| TokenError::Write {
                    path: path.into(),
                    source,
                })?;
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_existing(path),
        Err(source) => Err(TokenError::Create {
            path: path.into(),
            source,
        }),
    }
}

fn read_existing(path: &Path) -> Result<String, TokenError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let read_err = |source| TokenError::Read {
        path: path.into(),
        source,
    };
    // Checked on what was opened, so what is read is what passed.
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(read_err)?;
    let meta = f.metadata().map_err(read_err)?;
    let mode = meta.permissions().mode() & 0o777;
    // SAFETY: geteuid has no failure mode and touches no memory.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        return Err(TokenError::NotOwned {
            path: path.into(),
            owner: meta.uid(),
            mode,
            uid,
        });
    }
    if mode & 0o077 != 0 {
        return Err(TokenError::Readable {
            path: path.into(),
            mode,
        });
    }
    let mut text = String::new();
    f.take(4096).read_to_string(&mut text).map_err(read_err)?;
    let token = text.trim();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::NotAToken { path: path.into() });
    }
    Ok(token.to_string())
}

/// 32 bytes from the kernel's RNG, in hex.
fn fresh_token() -> Result<String, TokenError> {
    let mut b = [0u8; 32];
    let mut filled = 0;
    while filled < b.len() {
        // SAFETY: getrandom writes at most `b.len() - filled` bytes into the rest of b.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), b.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(TokenError::Random(e));
        }
        filled += n as usize;
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Middleware: lets `GET /v1/health` through, checks the bearer token on the rest.
pub async fn require_token(State(token): State<Token>, req: Request, next: Next) -> Response {
    if req.method() == Method::GET && req.uri().path() == "/v1/health" {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(t) if token.matches(t) => {
            // Its connection is now spared when the server makes room (crate::conn).
            if let Some(c) = req.extensions().get::<crate::conn::registry::ConnMark>() {
                c.authenticated();
            }
            next.run(req).await
        }
        found => {
            let why = if found.is_some() {
                "the bearer token is wrong"
            } else {
                "this route needs `Authorization: Bearer <token>` (the token is in the server's token file)"
            };
            let mut r =
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why).into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_created_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("kiln-server-token-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("token");
        let t = load_or_create(&p).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create(&p).unwrap(), t);
        assert_ne!(fresh_token().unwrap(), t);

        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert!(e.contains("has mode 644"), "{e}");
        fs::write(&p, "short\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_create(&p)
            .unwrap_err()
            .to_string()
            .contains("64 hex digits"));
        let e = load_or_create(&dir.join("no-dir/token"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot create the token file "), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_the_exact_token_matches() {
        let t = Token::new("abc");
        assert!(t.matches(b"abc"));
        for bad in [&b"abd"[..], b"ab", b"abcd", b""] {
            assert!(!t.matches(bad));
        }
    }
}
