//! API keys and shop logins of an open vault: authenticate, create, revoke, list; the rules
//! (scopes, key format, the MAC) are in `crate::access`.

use super::{Vault, read_lock, rfc3339};

impl Vault {
    /// Every API key: id, scopes, shop login (none: admin), creation time (RFC 3339).
    pub fn api_key_records(&self) -> Vec<(String, Vec<String>, Option<String>, String)> {
        let mut v: Vec<_> = read_lock(&self.inner.api_keys)
            .values()
            .map(|r| {
                (
                    r.id.clone(),
                    r.scopes.iter().map(|s| s.as_str().to_string()).collect(),
                    r.shop_login.clone(),
                    rfc3339(r.created_at()),
                )
            })
            .collect();
        v.sort();
        v
    }
}
