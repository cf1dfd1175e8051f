//! Whether the node's key-encryption key answers, as `keywatch` last
//! found: what the app holds and the middleware reads.

/// Whether the node's key-encryption key answers, as last checked.
#[derive(Debug, Default)]
pub struct KeyGate {
    withdrawn: std::sync::RwLock<Option<String>>,
}

impl KeyGate {
    /// Why the key cannot be used now, if it cannot.
    pub fn withdrawn(&self) -> Option<String> {
        self.withdrawn
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set(&self, why: Option<String>) {
        *self.withdrawn.write().unwrap_or_else(|p| p.into_inner()) = why;
    }
}
