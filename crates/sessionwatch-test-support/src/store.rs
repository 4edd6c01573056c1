//! The fake application's session store: session id -> user name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One in-memory session store. A shared farm hands the same store to every node; a per-node
/// farm gives each node its own, which is exactly the misconfiguration sessionwatch detects.
#[derive(Debug, Default)]
pub(crate) struct SessionStore {
    sessions: Mutex<HashMap<String, String>>,
}

impl SessionStore {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, String>> {
        // A panicking test thread must not turn every later request into a second panic; the map
        // holds plain strings, so a poisoned guard is still consistent.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The user behind `id`: `None` when unknown, `Some("")` for an anonymous session.
    pub(crate) fn user(&self, id: &str) -> Option<String> {
        self.lock().get(id).cloned()
    }

    pub(crate) fn insert(&self, id: String, user: String) {
        self.lock().insert(id, user);
    }

    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Generates session ids: 32 lowercase hex characters, like PHP's default `session.sid_length`.
#[derive(Debug)]
pub(crate) struct IdGenerator {
    rng: Mutex<StdRng>,
}

impl IdGenerator {
    /// Seeds from the OS so that two farms in one test never hand out the same ids.
    pub(crate) fn from_os() -> std::io::Result<Self> {
        let rng = StdRng::try_from_os_rng().map_err(std::io::Error::other)?;
        Ok(Self {
            rng: Mutex::new(rng),
        })
    }

    pub(crate) fn next_id(&self) -> String {
        let n: u128 = self
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .random();
        format!("{n:032x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_lowercase_hex_and_distinct() {
        let ids = IdGenerator::from_os().unwrap();
        let a = ids.next_id();
        let b = ids.next_id();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(a, b);
    }

    #[test]
    fn store_round_trip() {
        let store = SessionStore::new();
        store.insert("x".into(), "alice".into());
        assert_eq!(store.user("x").as_deref(), Some("alice"));
        store.remove("x");
        assert_eq!(store.user("x"), None);
        store.insert("y".into(), String::new());
        store.clear();
        assert_eq!(store.len(), 0);
    }
}
