//! Secret values: key bytes and secret strings (passphrases, PINs, shares, gateway credentials).
//! Each is a newtype that is zeroized on drop and prints `[REDACTED]`; the one way to read it is
//! its `expose` method, at the call that hands it to a primitive. None of them is `Clone`: a
//! secret exists once, and moves.

use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{Error, Result};

/// Length of every symmetric key in the hierarchy.
pub const KEY_LEN: usize = 32;

/// A 256-bit secret key. Zeroized on drop; prints as `[REDACTED]`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// A fresh key from the OS CSPRNG.
    pub fn random() -> Self {
        let mut k = SecretKey([0u8; KEY_LEN]);
        OsRng.fill_bytes(&mut k.0);
        k
    }

    /// A key that `fill` writes in place (a KDF's output), so no copy of it is left behind.
    pub fn fill_with(fill: impl FnOnce(&mut [u8; KEY_LEN]) -> Result<()>) -> Result<Self> {
        let mut k = SecretKey([0u8; KEY_LEN]);
        fill(&mut k.0)?;
        Ok(k)
    }

    /// Takes a key from a slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| Error::KeyUnlock("key has the wrong length"))?;
        Ok(SecretKey(arr))
    }

    /// The raw key bytes: for handing to a primitive, never for printing.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// A secret string (passphrase, API key). Zeroized on drop; prints as `[REDACTED]`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretString(String);

impl SecretString {
    /// Takes ownership of `s` (no copy is made).
    pub fn new(s: String) -> Self {
        SecretString(s)
    }

    /// The secret text: for handing to a primitive or a header, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// From a configuration string (gateway credentials): the parsed `String` moves in, no copy.
impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(SecretString)
    }
}

/// Compiles only while neither secret type is `Clone`: with `Clone`, the second blanket impl
/// below applies too and the call's inferred type parameter becomes ambiguous.
#[cfg(test)]
mod never_clone {
    trait AmbiguousIfClone<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfClone<()> for T {}
    impl<T: Clone> AmbiguousIfClone<u8> for T {}

    #[test]
    fn secrets_are_not_clone() {
        <super::SecretKey as AmbiguousIfClone<_>>::check();
        <super::SecretString as AmbiguousIfClone<_>>::check();
    }
}
