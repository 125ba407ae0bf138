//! The page, its script and its style, compiled into the binary (`include_str!`): no CDN, no
//! build step, no framework — plain HTML, CSS and JavaScript in `assets/`.

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Response};

use crate::body::Body;

pub struct Asset {
    body: &'static str,
    content_type: &'static str,
}

pub const PAGE: Asset = Asset {
    body: include_str!("assets/index.html"),
    content_type: "text/html; charset=utf-8",
};

pub const SCRIPT: Asset = Asset {
    body: include_str!("assets/app.js"),
    content_type: "text/javascript; charset=utf-8",
};

pub const STYLE: Asset = Asset {
    body: include_str!("assets/app.css"),
    content_type: "text/css; charset=utf-8",
};

/// The page may load only its own script, style and connections, and may not be framed.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn response(asset: &Asset) -> Response<Body> {
    let mut resp = Response::new(Body::full(asset.body));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    // Revalidated each time: a new binary's page is never mixed with an old script.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    h.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    resp
}
