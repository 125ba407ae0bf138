//! `auth_header`: how a backend's key is sent, as a template with exactly one `{{ key }}`
//! placeholder — `"Authorization: Bearer {{ key }}"` (the default of OpenAI-compatible types),
//! `"X-Api-Key: {{ key }}"` (Anthropic), `"api-key: {{ key }}"` (Azure OpenAI). NeMo's gateway
//! needs `--auth-header-format "X-Api-Key: {{ auth_secret }}"` for Anthropic, or every request
//! is a 401; here it is configuration, checked by `tollgate check`.

use http::header::{HeaderName, HeaderValue};

use crate::secret::Secret;

/// A parsed `auth_header` template: the header's name and the text around the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    name: HeaderName,
    before: String,
    after: String,
}

const PLACEHOLDER: &str = "{{ key }}";

impl AuthHeader {
    /// Reads `"Name: text {{ key }} text"`. The placeholder must appear exactly once (spaces
    /// inside the braces optional: `{{key}}` works too), in the value.
    pub fn parse(template: &str) -> Result<AuthHeader, String> {
        let Some((name, value)) = template.split_once(':') else {
            return Err(format!(
                "`{template}`: expected `Header-Name: value with {PLACEHOLDER}`"
            ));
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("`{}` is not a valid header name", name.trim()))?;
        let value = normalize(value.trim());
        match value.matches(PLACEHOLDER).count() {
            1 => {}
            0 => return Err(format!("`{template}` has no {PLACEHOLDER} placeholder")),
            n => {
                return Err(format!(
                    "`{template}` has {n} {PLACEHOLDER} placeholders; exactly one is allowed"
                ))
            }
        }
        let (before, after) = value
            .split_once(PLACEHOLDER)
            .map(|(b, a)| (b.to_owned(), a.to_owned()))
            .unwrap_or_default();
        if HeaderValue::from_str(&format!("{before}x{after}")).is_err() {
            return Err(format!("`{template}` is not a valid header value"));
        }
        Ok(AuthHeader {
            name,
            before,
            after,
        })
    }

    /// `Authorization: Bearer {{ key }}`.
    pub fn bearer() -> AuthHeader {
        AuthHeader {
            name: http::header::AUTHORIZATION,
            before: "Bearer ".into(),
            after: String::new(),
        }
    }

    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The header for `key`, marked sensitive (never logged by hyper or printed in debug).
    pub fn render(&self, key: &Secret) -> Result<(HeaderName, HeaderValue), String> {
        let mut value =
            HeaderValue::from_str(&format!("{}{}{}", self.before, key.expose(), self.after))
                .map_err(|_| {
                    "the key contains characters not allowed in an HTTP header".to_owned()
                })?;
        value.set_sensitive(true);
        Ok((self.name.clone(), value))
    }
}

/// `{{key}}`, `{{ key}}`, `{{key }}` → `{{ key }}`.
fn normalize(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 2..];
        match tail.find("}}") {
            Some(end) if tail[..end].trim() == "key" => {
                out.push_str(PLACEHOLDER);
                rest = &tail[end + 2..];
            }
            _ => {
                out.push_str("{{");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_need_exactly_one_placeholder() {
        let h = AuthHeader::parse("X-Api-Key: {{ key }}").expect("valid");
        let (name, value) = h.render(&Secret::new("sk-1")).expect("renders");
        assert_eq!(name, "x-api-key");
        assert_eq!(value, "sk-1");
        assert!(value.is_sensitive());
        let (name, value) = AuthHeader::parse("Authorization: Token {{key}}")
            .expect("valid")
            .render(&Secret::new("abc"))
            .expect("renders");
        assert_eq!(
            (name.as_str(), value.to_str().ok()),
            ("authorization", Some("Token abc"))
        );
        for bad in [
            "X-Api-Key: key",
            "X-Api-Key: {{ key }} {{ key }}",
            "no colon {{ key }}",
            "Bad Name: {{ key }}",
            "X: {{ key }}\nY: 1",
        ] {
            assert!(AuthHeader::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            AuthHeader::bearer()
                .render(&Secret::new("k"))
                .expect("renders")
                .1,
            "Bearer k"
        );
    }
}
