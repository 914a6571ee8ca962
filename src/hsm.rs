//! The `pkcs11` KEK source: the KEK is a non-extractable AES-256 key generated inside an HSM and
//! used there, through PKCS#11 (the `cryptoki` crate), to wrap and unwrap the vault's keys (DEKs,
//! the fingerprint key, the API-key MAC key). Tested against SoftHSM2 2.6.
//!
//! # Wrapping: RFC 3394 over (key ‖ context tag)
//!
//! Plain AES key wrap (RFC 3394, `CKM_AES_KEY_WRAP`) is the most portable wrapping mechanism
//! across HSMs, and SoftHSM offers it for `C_WrapKey`/`C_UnwrapKey` only (not for `C_Encrypt`).
//! RFC 3394 has no associated data, and cryptoki 0.12 gives no way to pass the alternative
//! initial value. The software KEK binds every wrapped key to its name, id and KEK
//! version with AES-GCM associated data ([`crate::crypto::wrap_aad`]); we keep that property by
//! wrapping, instead of the bare 32-byte key, the 48-byte value `key ‖ SHA-256(wrap_aad)[..16]`
//! (imported as a short-lived generic-secret session object). RFC 3394's integrity check covers
//! every block, so a wrapped key copied to another slot (another name, id or KEK version)
//! unwraps to a value whose tag does not match and is refused, exactly like a GCM tag failure.
//! We did not use AES-GCM inside the HSM (also possible in SoftHSM): some HSMs in FIPS mode refuse
//! a caller-chosen IV, and key wrap is the more portable of the two.
//!
//! The unwrapped value has to reach this process (the DEKs encrypt records in-process with
//! `aes-gcm`), so `C_UnwrapKey` creates a non-sensitive, extractable *session* object whose
//! `CKA_VALUE` we read at once and then destroy. The KEK itself is `CKA_SENSITIVE`,
//! `CKA_EXTRACTABLE` false, `CKA_MODIFIABLE` false; [`Token::find_kek`] refuses an object that is
//! not (or that was ever extractable), so a KEK swapped for an exportable one is not used.
//!
//! The user PIN is a [`SecretString`] and is never logged; HSM errors are logged by their PKCS#11
//! return value only (no secret material) and mapped to typed [`Error`]s.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{KEY_LEN, KeyWrap, NONCE_LEN, Sealed, SecretKey, SecretString};
use crate::{Error, Result};

/// Label prefix of the KEK objects in the token: version N is `panvault-kek-vN`.
pub const KEK_LABEL_PREFIX: &str = "panvault-kek-v";
/// Bytes of context tag appended to a key before it is wrapped.
const TAG_LEN: usize = 16;
/// Length of an RFC 3394 wrap of `key ‖ tag` (one 64-bit block more than its input).
pub const WRAPPED_LEN: usize = KEY_LEN + TAG_LEN + 8;

/// The HSM object label of KEK version `version`.
pub fn kek_label(version: u32) -> String {
    format!("{KEK_LABEL_PREFIX}{version}")
}

/// Which PKCS#11 module and token hold the KEK (recorded in the keyring; not secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (a shared library: trusted configuration, never from a
    /// request, since loading it runs its code).
    pub module: PathBuf,
    /// Label of the token (slot ids are not stable across processes; labels are).
    pub token: String,
}

/// Logs the PKCS#11 failure (its return value names no secret) and maps it to a typed error.
fn hsm(what: &'static str) -> impl FnOnce(P11Error) -> Error {
    move |e| {
        tracing::warn!(error = %e, "PKCS#11: {what}");
        Error::Hsm(what)
    }
}

/// One loaded module per path and process: a second `C_Initialize` of the same library answers
/// CKR_CRYPTOKI_ALREADY_INITIALIZED, and cryptoki never calls `C_Finalize` on drop.
static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

fn module(path: &Path) -> Result<Pkcs11> {
    let mut loaded = crate::sync::lock(&MODULES);
    if let Some((_, p)) = loaded.iter().find(|(p, _)| p == path) {
        return Ok(p.clone());
    }
    let pkcs11 = Pkcs11::new(path).map_err(|e| {
        tracing::warn!(error = %e, "PKCS#11: cannot load module");
        Error::Config(format!("cannot load the PKCS#11 module {}", path.display()))
    })?;
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(hsm("C_Initialize failed")(e)),
    }
    loaded.push((path.to_path_buf(), pkcs11.clone()));
    Ok(pkcs11)
}

/// A logged-in session on the token that holds the KEK versions.
pub struct Token {
    label: String,
    /// `Session` is `Send` but not `Sync`: one session, used by one caller at a time.
    session: Mutex<Session>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token {{ label: {:?} }}", self.label)
    }
}

impl Token {
    /// Loads the module, finds the token by label, opens a R/W session and logs in as the
    /// normal user. A wrong PIN is [`Error::KeyUnlock`] (like a wrong passphrase).
    pub fn open(cfg: &Pkcs11Config, pin: &SecretString) -> Result<Arc<Token>> {
        let pkcs11 = module(&cfg.module)?;
        let mut found = None;
        for slot in pkcs11
            .get_slots_with_token()
            .map_err(hsm("cannot list slots"))?
        {
            let info = pkcs11
                .get_token_info(slot)
                .map_err(hsm("cannot read token info"))?;
            if info.token_initialized() && info.label() == cfg.token {
                if found.is_some() {
                    return Err(Error::Config(format!(
                        "more than one PKCS#11 token is labelled `{}`",
                        cfg.token
                    )));
                }
                found = Some(slot);
            }
        }
        let slot = found.ok_or_else(|| {
            Error::Config(format!(
                "no initialized PKCS#11 token labelled `{}` in {}",
                cfg.token,
                cfg.module.display()
            ))
        })?;
        let session = pkcs11
            .open_rw_session(slot)
            .map_err(hsm("cannot open a session"))?;
        let auth = AuthPin::new(pin.expose().into());
        let mut login = session.login(UserType::User, Some(&auth));
        if let Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) = login {
            // Login state belongs to the process and token: a session of a vault being replaced
            // (sealed, then unsealed while requests still hold the old one) is still logged in.
            // Accepting that would accept any PIN; log out (ending that login for every
            // session of this process) and check this PIN afresh.
            session.logout().map_err(hsm("logout failed"))?;
            login = session.login(UserType::User, Some(&auth));
        }
        match login {
            Ok(()) => {}
            Err(P11Error::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => return Err(Error::KeyUnlock("wrong PKCS#11 user PIN")),
            Err(P11Error::Pkcs11(RvError::PinLocked, _)) => {
                return Err(Error::Hsm("the token's user PIN is locked"));
            }
            Err(P11Error::Pkcs11(RvError::UserPinNotInitialized, _)) => {
                return Err(Error::Hsm("the token's user PIN is not initialized"));
            }
            Err(e) => return Err(hsm("login failed")(e)),
        }
        Ok(Arc::new(Token {
            label: cfg.token.clone(),
            session: Mutex::new(session),
        }))
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        crate::sync::lock(&self.session)
    }

    fn find_by_label(session: &Session, label: &str) -> Result<Vec<ObjectHandle>> {
        session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(hsm("cannot search the token"))
    }

    /// Generates KEK `version` in the token: AES-256, persistent, private, sensitive, never
    /// extractable, not modifiable, usable for wrap/unwrap only. Refuses if the token already
    /// holds an object with that label (one vault per token).
    pub fn generate_kek(self: &Arc<Self>, version: u32) -> Result<KekHandle> {
        let label = kek_label(version);
        let session = self.session();
        if !Self::find_by_label(&session, &label)?.is_empty() {
            return Err(Error::Config(format!(
                "PKCS#11 token `{}` already holds a key labelled `{label}`",
                self.label
            )));
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            // SoftHSM turns usages on unless told otherwise.
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let object = session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(hsm("cannot generate the KEK"))?;
        drop(session);
        Ok(KekHandle {
            token: Arc::clone(self),
            object,
            label,
        })
    }

    /// Finds KEK `version` by label and checks that it is a non-extractable, sensitive AES key
    /// that never left the HSM.
    pub fn find_kek(self: &Arc<Self>, version: u32) -> Result<KekHandle> {
        let label = kek_label(version);
        let session = self.session();
        let object = match Self::find_by_label(&session, &label)?.as_slice() {
            [one] => *one,
            [] => {
                return Err(Error::KeyUnlock(
                    "KEK object not found in the PKCS#11 token",
                ));
            }
            _ => return Err(Error::Hsm("more than one KEK object with the same label")),
        };
        let attrs = session
            .get_attributes(
                object,
                &[
                    AttributeType::KeyType,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::Unwrap,
                ],
            )
            .map_err(hsm("cannot read the KEK's attributes"))?;
        let required = [
            Attribute::KeyType(KeyType::AES),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::NeverExtractable(true),
            Attribute::Unwrap(true),
        ];
        if !required.iter().all(|r| attrs.contains(r)) {
            return Err(Error::Hsm(
                "the KEK object in the token is extractable, not sensitive or not an AES unwrap key",
            ));
        }
        drop(session);
        Ok(KekHandle {
            token: Arc::clone(self),
            object,
            label,
        })
    }
}

impl Token {
    /// Destroys KEK `version` in the token (the last step of a rotation). Absent: nothing to do.
    pub fn destroy_kek(&self, version: u32) -> Result<()> {
        let session = self.session();
        for object in Self::find_by_label(&session, &kek_label(version))? {
            session
                .destroy_object(object)
                .map_err(hsm("cannot destroy the old KEK object"))?;
        }
        Ok(())
    }
}

/// A KEK version inside the HSM. `Send + Sync`: the session sits behind a mutex.
pub struct KekHandle {
    token: Arc<Token>,
    object: ObjectHandle,
    label: String,
}

impl std::fmt::Debug for KekHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KekHandle {{ token: {:?}, label: {:?} }}",
            self.token.label, self.label
        )
    }
}

/// First 16 bytes of SHA-256 over the associated data of the wrapped key.
fn context_tag(aad: &[u8]) -> [u8; TAG_LEN] {
    let digest = Sha256::digest(aad);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&digest[..TAG_LEN]);
    tag
}

impl KekHandle {
    /// The object label in the token.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// RFC 3394-wraps `key ‖ tag(aad)` under this KEK: [`WRAPPED_LEN`] bytes.
    fn wrap_bytes(&self, aad: &[u8], key: &SecretKey) -> Result<Vec<u8>> {
        let mut value = Zeroizing::new(Vec::with_capacity(KEY_LEN + TAG_LEN));
        value.extend_from_slice(key.expose());
        value.extend_from_slice(&context_tag(aad));
        let mut template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false), // a session object: gone with the session at the latest
            Attribute::Private(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true), // C_WrapKey needs it on the key being wrapped
            Attribute::Value(value.to_vec()),
        ];
        let session = self.token.session();
        let created = session.create_object(&template);
        for a in &mut template {
            if let Attribute::Value(v) = a {
                v.zeroize();
            }
        }
        let tmp = created.map_err(hsm("cannot import the key to wrap"))?;
        let wrapped = session.wrap_key(&Mechanism::AesKeyWrap, self.object, tmp);
        let destroyed = session.destroy_object(tmp);
        let wrapped = wrapped.map_err(hsm("C_WrapKey failed"))?;
        destroyed.map_err(hsm("cannot destroy a session key"))?;
        if wrapped.len() != WRAPPED_LEN {
            return Err(Error::Hsm("C_WrapKey returned an unexpected length"));
        }
        Ok(wrapped)
    }

    /// Reverses [`KekHandle::wrap_bytes`]; refuses a blob made for other associated data, under
    /// another KEK, or altered ([`Error::Decrypt`], like the software KEK).
    fn unwrap_bytes(&self, aad: &[u8], wrapped: &[u8]) -> Result<SecretKey> {
        let refused = Error::Decrypt {
            what: "wrapped key",
        };
        if wrapped.len() != WRAPPED_LEN {
            return Err(refused);
        }
        let session = self.token.session();
        let tmp = match session.unwrap_key(
            &Mechanism::AesKeyWrap,
            self.object,
            wrapped,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ],
        ) {
            Ok(tmp) => tmp,
            // SoftHSM reports a failed RFC 3394 integrity check as CKR_GENERAL_ERROR, others as
            // CKR_WRAPPED_KEY_INVALID: any failure here is a refused blob.
            Err(e) => {
                tracing::debug!(error = %e, "PKCS#11: C_UnwrapKey refused");
                return Err(refused);
            }
        };
        let attrs = session.get_attributes(tmp, &[AttributeType::Value]);
        let destroyed = session.destroy_object(tmp);
        drop(session);
        // cryptoki hands the value out in a plain Vec: scrub it on drop.
        let value = attrs
            .map_err(hsm("cannot read the unwrapped key"))?
            .into_iter()
            .find_map(|a| match a {
                Attribute::Value(bytes) => Some(Zeroizing::new(bytes)),
                _ => None,
            });
        destroyed.map_err(hsm("cannot destroy a session key"))?;
        let value = value.ok_or(Error::Hsm("the unwrapped key is not readable"))?;
        if value.len() != KEY_LEN + TAG_LEN {
            return Err(refused);
        }
        let (key, tag) = value.split_at(KEY_LEN);
        if !bool::from(tag.ct_eq(&context_tag(aad))) {
            return Err(refused);
        }
        SecretKey::from_slice(key)
    }
}

/// The HSM's RFC 3394 wrap as the vault's key-wrapping seam. A [`Sealed`] made here has an
/// all-zero nonce and the [`WRAPPED_LEN`]-byte wrap as ciphertext; any other nonce is refused.
impl KeyWrap for KekHandle {
    fn wrap(&self, aad: &[u8], key: &SecretKey) -> Result<Sealed> {
        Ok(Sealed {
            nonce: [0u8; NONCE_LEN],
            ciphertext: self.wrap_bytes(aad, key)?,
        })
    }

    fn unwrap(&self, aad: &[u8], sealed: &Sealed) -> Result<SecretKey> {
        if sealed.nonce != [0u8; NONCE_LEN] {
            return Err(Error::Decrypt {
                what: "wrapped key",
            });
        }
        self.unwrap_bytes(aad, &sealed.ciphertext)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::crypto::Kek;

    const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
    const TOKEN: &str = "panvault-unit";
    const PIN: &str = "unit-pin-1234";

    /// Runs [`softhsm_inner`] in a child process of this test binary, with `SOFTHSM2_CONF`
    /// pointing at a throwaway token (a test cannot set the variable in-process, and must not
    /// touch the system's SoftHSM configuration). Same skip rule as `tests/hsm.rs`.
    #[test]
    fn wrap_and_unwrap_in_softhsm() {
        let present = Path::new(MODULE).exists()
            && std::process::Command::new("softhsm2-util")
                .arg("--version")
                .output()
                .is_ok();
        if !present {
            if std::env::var("PANVAULT_SKIP_HSM_TESTS").as_deref() == Ok("1") {
                eprintln!("note: SoftHSM2 not installed; PKCS#11 unit test skipped");
                return;
            }
            panic!(
                "SoftHSM2 is not installed: `apt-get install softhsm2` (.ci/run does), or set \
                 PANVAULT_SKIP_HSM_TESTS=1 to skip"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let init = std::process::Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN, "--pin", PIN])
            .args(["--so-pin", "unit-so-pin"])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(init.status.success(), "{init:?}");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "hsm::tests::softhsm_inner",
                "--ignored",
                "--nocapture",
            ])
            .env("SOFTHSM2_CONF", &conf)
            .env("PANVAULT_HSM_UNIT_INNER", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "{text}");
    }

    /// The body of [`wrap_and_unwrap_in_softhsm`]; does nothing unless run by it.
    #[test]
    #[ignore = "run by wrap_and_unwrap_in_softhsm with its own SOFTHSM2_CONF"]
    fn softhsm_inner() {
        if std::env::var("PANVAULT_HSM_UNIT_INNER").as_deref() != Ok("1") {
            return;
        }
        let cfg = Pkcs11Config {
            module: MODULE.into(),
            token: TOKEN.into(),
        };
        let wrong = Token::open(&cfg, &SecretString::new("wrong-pin".into()));
        assert!(matches!(wrong, Err(Error::KeyUnlock(_))), "{wrong:?}");
        let missing = Token::open(
            &Pkcs11Config {
                module: MODULE.into(),
                token: "no-such-token".into(),
            },
            &SecretString::new(PIN.into()),
        );
        assert!(matches!(missing, Err(Error::Config(_))), "{missing:?}");

        let token = Token::open(&cfg, &SecretString::new(PIN.into())).unwrap();
        assert!(matches!(token.find_kek(1), Err(Error::KeyUnlock(_))));
        let generated = token.generate_kek(1).unwrap();
        assert!(matches!(token.generate_kek(1), Err(Error::Config(_))));
        drop(generated);
        // Opened again in the same process (the earlier login is still live): a wrong PIN is
        // still refused, the right one works.
        let again = Token::open(&cfg, &SecretString::new("wrong-pin".into()));
        assert!(matches!(again, Err(Error::KeyUnlock(_))), "{again:?}");
        let token = Token::open(&cfg, &SecretString::new(PIN.into())).unwrap();
        let handle = token.find_kek(1).unwrap();

        // The KEK's value cannot be read or wrapped out.
        {
            let session = token.session();
            let value = session
                .get_attributes(handle.object, &[AttributeType::Value])
                .unwrap();
            assert!(
                !value.iter().any(|a| matches!(a, Attribute::Value(_))),
                "KEK value readable"
            );
            assert!(
                session
                    .wrap_key(&Mechanism::AesKeyWrap, handle.object, handle.object)
                    .is_err()
            );
        }

        let kek = Kek::with(1, Box::new(handle));
        let dek = SecretKey::random();
        let sealed = kek.wrap("dek", 7, &dek).unwrap();
        assert_eq!(sealed.ciphertext.len(), WRAPPED_LEN);
        assert_eq!(
            kek.unwrap_key("dek", 7, &sealed).unwrap().expose(),
            dek.expose()
        );
        // Bound to name, id and KEK version, like the software KEK.
        for (name, id) in [("dek", 8), ("fingerprint", 7)] {
            assert!(matches!(
                kek.unwrap_key(name, id, &sealed),
                Err(Error::Decrypt { .. })
            ));
        }
        let other_version = Kek::with(2, Box::new(token.find_kek(1).unwrap()));
        assert!(other_version.unwrap_key("dek", 7, &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered.ciphertext[3] ^= 1;
        assert!(kek.unwrap_key("dek", 7, &tampered).is_err());
        let mut nonce = sealed.clone();
        nonce.nonce[0] = 1;
        assert!(kek.unwrap_key("dek", 7, &nonce).is_err());
        // A software-wrapped key is not accepted by the HSM KEK.
        let local = Kek::new(1, &SecretKey::random())
            .wrap("dek", 7, &dek)
            .unwrap();
        assert!(kek.unwrap_key("dek", 7, &local).is_err());
        // No session objects left behind.
        let leftovers = token
            .session()
            .find_objects(&[Attribute::Token(false)])
            .unwrap();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<KekHandle>();
        send_sync::<Token>();
    }

    #[test]
    fn labels_and_tags() {
        assert_eq!(kek_label(7), "panvault-kek-v7");
        let a = context_tag(&crate::crypto::wrap_aad("dek", 1, 1));
        let b = context_tag(&crate::crypto::wrap_aad("dek", 2, 1));
        assert_ne!(a, b);
        assert_eq!(WRAPPED_LEN, 56);
    }
}
