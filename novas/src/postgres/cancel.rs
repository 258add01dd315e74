//! CancelRequest routing. psql cancels a query by opening a new connection
//! and sending the backend key it was given. NOVAS hands out its own random
//! key per session and remembers the upstream's real one, so that a cancel
//! reaches the real server through the same agent, and a user can only
//! cancel a session whose key they were given.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use rand::Rng;

use crate::registry::Agent;

/// What a cancel needs to reach the real server.
#[derive(Clone)]
pub struct Upstream {
    pub resource: String,
    pub target: String,
    pub session_id: String,
    pub agent: Arc<Agent>,
    /// The real server's key.
    pub key: super::CancelKey,
}

/// Live sessions by the key their client was given.
pub struct CancelKeys<T = Upstream> {
    map: Mutex<HashMap<(u32, u32), T>>,
}

impl<T> Default for CancelKeys<T> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// Removes the key when the session ends.
pub struct Registration<'a, T = Upstream> {
    keys: &'a CancelKeys<T>,
    key: (u32, u32),
}

impl<T> Drop for Registration<'_, T> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.keys.map.lock() {
            m.remove(&self.key);
        }
    }
}

impl<T: Clone> CancelKeys<T> {
    /// A fresh key for the client, bound to `upstream` until the returned
    /// registration is dropped.
    pub fn register(&self, upstream: T) -> ((u32, u32), Registration<'_, T>) {
        let mut rng = rand::rng();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let key = loop {
            let k = (rng.random::<u32>() & 0x7fff_ffff, rng.random::<u32>());
            if !map.contains_key(&k) {
                break k;
            }
        };
        map.insert(key, upstream);
        drop(map);
        (key, Registration { keys: self, key })
    }

    /// The session a presented key belongs to, if it is live.
    pub fn lookup(&self, pid: u32, secret: u32) -> Option<T> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(pid, secret)).cloned()
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_as_long_as_their_session() {
        let keys: CancelKeys<&str> = CancelKeys::default();
        let (k1, r1) = keys.register("one");
        let (k2, r2) = keys.register("two");
        assert_ne!(k1, k2);
        assert!(
            k1.0 <= 0x7fff_ffff,
            "pid stays positive for clients that print it"
        );
        assert_eq!(keys.lookup(k1.0, k1.1), Some("one"));
        assert_eq!(keys.lookup(k1.0, k1.1 ^ 1), None, "the secret must match");
        drop(r1);
        assert_eq!(keys.lookup(k1.0, k1.1), None);
        assert_eq!(keys.lookup(k2.0, k2.1), Some("two"));
        drop(r2);
        assert!(keys.is_empty());
    }
}
