//! A browser for fleet tests: one cookie jar, requests sent to any replica.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use sessionwatch_test_support::{SharedClient, shared_client};

/// A browser: keeps every cookie it is given and sends them all back.
pub struct Browser {
    client: SharedClient,
    /// Cookie name -> value.
    pub jar: HashMap<String, String>,
}

impl Browser {
    /// A browser with an empty jar.
    pub fn new() -> Self {
        Self {
            client: shared_client(),
            jar: HashMap::new(),
        }
    }

    /// Sends a request to `to` with every cookie of the jar; takes the answer's cookies.
    pub async fn send(
        &mut self,
        to: SocketAddr,
        method: Method,
        path: &str,
        body: &'static str,
    ) -> (StatusCode, http::HeaderMap, String) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{to}{path}"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if !self.jar.is_empty() {
            let mut pairs: Vec<String> = self.jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
            pairs.sort();
            req = req.header(COOKIE, pairs.join("; "));
        }
        let req = req
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let resp = self.client.request(req).await.expect("proxy answers");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        for line in parts.headers.get_all(SET_COOKIE) {
            let line = line.to_str().unwrap();
            let (name, rest) = line.split_once('=').unwrap();
            let value = rest.split(';').next().unwrap().trim().trim_matches('"');
            if value.is_empty() || value == "deleted" || line.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// Signs in; returns the node that issued the session.
    pub async fn login(&mut self, to: SocketAddr) -> String {
        let (status, headers, _) = self.send(to, Method::POST, "/login", "user=u").await;
        assert_eq!(status, StatusCode::FOUND);
        headers["x-served-by"].to_str().unwrap().to_owned()
    }

    /// Signs in; returns the value of the session cookie `cookie` and the node that issued it.
    pub async fn sign_in(&mut self, to: SocketAddr, cookie: &str) -> (String, String) {
        let node = self.login(to).await;
        (self.jar[cookie].clone(), node)
    }

    /// The value of cookie `name` in the jar.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.jar.get(name).map(String::as_str)
    }
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}
