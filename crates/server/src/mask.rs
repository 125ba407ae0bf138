//! `Masker`: every secret the configuration holds — each backend's key (from the file or its
//! key variable) and the values of its configured headers — replaced by `***` in whatever an
//! upstream's error brings back. A connector scrubs its own key; an upstream can also echo a
//! header secret, or a key of another backend it was once given, so the whole set is masked
//! wherever upstream error text reaches a client: error bodies, error frames, failure messages.
//!
//! Only error paths pay for it; the relayed answers of successful requests are not scanned.

use bytes::Bytes;
use memchr::memmem::Finder;
use tollgate_core::GatewayError;

/// Secrets shorter than this are not masked: masking "ab" would mangle any text.
const SHORTEST: usize = 6;

#[derive(Default)]
pub struct Masker {
    /// Longest first, so a secret that contains another is masked whole.
    finders: Vec<Finder<'static>>,
}

impl Masker {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Masker {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| s.len() >= SHORTEST)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Masker {
            finders: secrets
                .iter()
                .map(|s| Finder::new(s.as_bytes()).into_owned())
                .collect(),
        }
    }

    /// `bytes` with every secret replaced, or `None` when it holds none.
    pub fn mask(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut current: Option<Vec<u8>> = None;
        for finder in &self.finders {
            let text = current.as_deref().unwrap_or(bytes);
            if finder.find(text).is_none() {
                continue;
            }
            let mut out = Vec::with_capacity(text.len());
            let mut rest = text;
            while let Some(at) = finder.find(rest) {
                out.extend_from_slice(&rest[..at]);
                out.extend_from_slice(b"***");
                rest = &rest[at + finder.needle().len()..];
            }
            out.extend_from_slice(rest);
            current = Some(out);
        }
        current
    }

    /// `bytes` masked (the same buffer when it holds no secret).
    pub fn mask_bytes(&self, bytes: Bytes) -> Bytes {
        match self.mask(&bytes) {
            Some(masked) => Bytes::from(masked),
            None => bytes,
        }
    }

    fn mask_text(&self, text: String) -> String {
        match self.mask(text.as_bytes()) {
            Some(masked) => String::from_utf8_lossy(&masked).into_owned(),
            None => text,
        }
    }

    /// An error with every secret masked in what it will tell the client.
    pub fn mask_error(&self, error: GatewayError) -> GatewayError {
        if self.finders.is_empty() {
            return error;
        }
        match error {
            GatewayError::Upstream {
                status,
                body,
                retry_after,
            } => GatewayError::Upstream {
                status,
                body: self.mask_bytes(body),
                retry_after,
            },
            GatewayError::UpstreamFailed(m) => GatewayError::UpstreamFailed(self.mask_text(m)),
            GatewayError::UpstreamTimeout(m) => GatewayError::UpstreamTimeout(self.mask_text(m)),
            GatewayError::BackendUnavailable(m) => {
                GatewayError::BackendUnavailable(self.mask_text(m))
            }
            GatewayError::Internal(m) => GatewayError::Internal(self.mask_text(m)),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_is_masked_longest_first() {
        let m = Masker::new([
            "sk-abcdef".to_string(),
            "sk-abcdef-long".into(),
            "ab".into(),
        ]);
        assert_eq!(
            m.mask(b"x sk-abcdef-long y sk-abcdef z ab").as_deref(),
            Some(&b"x *** y *** z ab"[..])
        );
        assert_eq!(m.mask(b"nothing here"), None);
        let e = m.mask_error(GatewayError::UpstreamFailed("got sk-abcdef".into()));
        assert_eq!(e.to_string(), "got ***");
    }
}
