//! Keys: each recording has its own random data key, stored only wrapped (encrypted) by the
//! server's master key and bound to the recording's id.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use aes_gcm::aead::{AeadInOut, Nonce, Tag};
use aes_gcm::{Aes256Gcm, KeyInit};
use rand::CryptoRng;
use uuid::Uuid;
use zeroize::Zeroizing;

/// Length of a master key or a data key: AES-256.
pub const KEY_LEN: usize = 32;
/// Length of a [`WrappedKey`] in bytes: version, nonce, encrypted data key, tag.
pub const WRAPPED_KEY_LEN: usize = 1 + NONCE_LEN + KEY_LEN + TAG_LEN;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const WRAP_VERSION: u8 = 1;
/// Part of the wrapping's associated data, so a ciphertext made under the master key for any
/// other purpose can never be accepted as a data key.
const WRAP_LABEL: &[u8] = b"confide-media data key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("master key {path}: must hold exactly {KEY_LEN} bytes, holds {len}")]
    MasterKeyLength { path: String, len: u64 },
    #[error("wrapped data key: must be {WRAPPED_KEY_LEN} bytes, is {len}")]
    WrappedLength { len: usize },
    #[error("wrapped data key: unsupported version {0}")]
    WrappedVersion(u8),
    #[error("wrapped data key does not open: wrong master key, another recording's key, or altered")]
    Unwrap,
}

/// The server's key-encryption key. It never encrypts media itself, only data keys.
pub struct MasterKey(Zeroizing<[u8; KEY_LEN]>);

impl MasterKey {
    /// For a key that comes from configuration rather than a file.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Reads a key file holding exactly 32 raw bytes (as the server creates `DATA_DIR/master.key`).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut file = File::open(path).map_err(read_err)?;
        let len = file.metadata().map_err(read_err)?.len();
        if len != KEY_LEN as u64 {
            return Err(KeyError::MasterKeyLength {
                path: path.display().to_string(),
                len,
            });
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        file.read_exact(&mut key[..]).map_err(read_err)?;
        Ok(Self(key))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&*self.0).into())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// One recording's media key. Wiped from memory when dropped.
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    /// A fresh random key; the RNG is passed in so tests can be deterministic.
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(&mut key[..]);
        Self(key)
    }

    /// Encrypts this key under `master`, bound to `recording`: it opens only with both.
    pub fn wrap(&self, master: &MasterKey, recording: Uuid, rng: &mut impl CryptoRng) -> WrappedKey {
        let mut out = [0u8; WRAPPED_KEY_LEN];
        out[0] = WRAP_VERSION;
        // A random nonce is safe here: a master key wraps one key per recording, far below
        // the ~2^32 messages where random 96-bit nonces start to risk colliding.
        rng.fill_bytes(&mut out[1..1 + NONCE_LEN]);
        let nonce = Nonce::<Aes256Gcm>::try_from(&out[1..1 + NONCE_LEN]).expect("nonce is 12 bytes");
        let (_, body) = out.split_at_mut(1 + NONCE_LEN);
        let (ciphertext, tag_out) = body.split_at_mut(KEY_LEN);
        ciphertext.copy_from_slice(&self.0[..]);
        let tag = master
            .cipher()
            .encrypt_inout_detached(&nonce, &wrap_aad(recording), ciphertext.into())
            .expect("a 32-byte message is within AES-GCM's limits");
        tag_out.copy_from_slice(&tag);
        WrappedKey(out)
    }

    pub(crate) fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&*self.0).into())
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A data key as stored next to its recording: `version (1) ‖ nonce (12) ‖ AES-256-GCM(master,
/// data key) (32) ‖ tag (16)`, with the recording id as associated data.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey([u8; WRAPPED_KEY_LEN]);

impl WrappedKey {
    /// Parses stored bytes; whether they open is only known at [`WrappedKey::unwrap`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; WRAPPED_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| KeyError::WrappedLength { len: bytes.len() })?;
        if bytes[0] != WRAP_VERSION {
            return Err(KeyError::WrappedVersion(bytes[0]));
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Recovers the data key; fails on a wrong master key, a wrong recording id or altered bytes.
    pub fn unwrap(&self, master: &MasterKey, recording: Uuid) -> Result<DataKey, KeyError> {
        let nonce = Nonce::<Aes256Gcm>::try_from(&self.0[1..1 + NONCE_LEN]).expect("nonce is 12 bytes");
        let tag = Tag::<Aes256Gcm>::try_from(&self.0[1 + NONCE_LEN + KEY_LEN..]).expect("tag is 16 bytes");
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&self.0[1 + NONCE_LEN..1 + NONCE_LEN + KEY_LEN]);
        master
            .cipher()
            .decrypt_inout_detached(&nonce, &wrap_aad(recording), (&mut key[..]).into(), &tag)
            .map_err(|_| KeyError::Unwrap)?;
        Ok(DataKey(key))
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrappedKey(v{})", self.0[0])
    }
}

/// Label ‖ version ‖ recording id: the version is authenticated too, so it can't be swapped.
fn wrap_aad(recording: Uuid) -> [u8; WRAP_LABEL.len() + 1 + 16] {
    let mut aad = [0u8; WRAP_LABEL.len() + 1 + 16];
    aad[..WRAP_LABEL.len()].copy_from_slice(WRAP_LABEL);
    aad[WRAP_LABEL.len()] = WRAP_VERSION;
    aad[WRAP_LABEL.len() + 1..].copy_from_slice(recording.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn same_key(a: &DataKey, b: &DataKey) -> bool {
        a.0[..] == b.0[..]
    }

    #[test]
    fn wrapped_key_round_trips_through_bytes() {
        let mut rng = rng();
        let master = MasterKey::from_bytes([9; KEY_LEN]);
        let recording = Uuid::from_u128(1);
        let key = DataKey::generate(&mut rng);
        let stored = key.wrap(&master, recording, &mut rng).as_bytes().to_vec();
        assert_eq!(stored.len(), WRAPPED_KEY_LEN);
        let opened = WrappedKey::from_bytes(&stored)
            .unwrap()
            .unwrap(&master, recording)
            .unwrap();
        assert!(same_key(&key, &opened));
    }

    #[test]
    fn generated_keys_differ_and_wrapping_is_randomised() {
        let mut rng = rng();
        let master = MasterKey::from_bytes([9; KEY_LEN]);
        let a = DataKey::generate(&mut rng);
        let b = DataKey::generate(&mut rng);
        assert!(!same_key(&a, &b));
        let recording = Uuid::from_u128(1);
        assert_ne!(
            a.wrap(&master, recording, &mut rng),
            a.wrap(&master, recording, &mut rng)
        );
    }

    #[test]
    fn unwrap_refuses_wrong_master_wrong_recording_and_any_altered_byte() {
        let mut rng = rng();
        let master = MasterKey::from_bytes([9; KEY_LEN]);
        let recording = Uuid::from_u128(1);
        let wrapped = DataKey::generate(&mut rng).wrap(&master, recording, &mut rng);

        let other_master = MasterKey::from_bytes([8; KEY_LEN]);
        assert!(matches!(
            wrapped.unwrap(&other_master, recording),
            Err(KeyError::Unwrap)
        ));
        assert!(matches!(
            wrapped.unwrap(&master, Uuid::from_u128(2)),
            Err(KeyError::Unwrap)
        ));
        for i in 0..WRAPPED_KEY_LEN {
            let mut bytes = wrapped.as_bytes().to_vec();
            bytes[i] ^= 0x01;
            let opened = WrappedKey::from_bytes(&bytes).and_then(|w| w.unwrap(&master, recording));
            assert!(
                matches!(opened, Err(KeyError::Unwrap | KeyError::WrappedVersion(_))),
                "byte {i}"
            );
        }
    }

    #[test]
    fn wrapped_key_of_the_wrong_length_is_refused() {
        for len in [0, WRAPPED_KEY_LEN - 1, WRAPPED_KEY_LEN + 1] {
            assert!(matches!(
                WrappedKey::from_bytes(&vec![WRAP_VERSION; len]),
                Err(KeyError::WrappedLength { len: l }) if l == len
            ));
        }
    }

    #[test]
    fn master_key_file_must_hold_exactly_32_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");

        std::fs::write(&path, [5u8; KEY_LEN]).unwrap();
        let loaded = MasterKey::load(&path).unwrap();
        assert_eq!(loaded.0[..], [5u8; KEY_LEN]);

        for len in [0, KEY_LEN - 1, KEY_LEN + 1] {
            std::fs::write(&path, vec![5u8; len]).unwrap();
            let err = MasterKey::load(&path).unwrap_err();
            assert!(
                matches!(err, KeyError::MasterKeyLength { len: l, .. } if l == len as u64),
                "{err}"
            );
        }

        let missing = dir.path().join("absent.key");
        assert!(matches!(MasterKey::load(&missing), Err(KeyError::Read { .. })));
    }

    #[test]
    fn debug_output_never_shows_key_bytes() {
        let master = MasterKey::from_bytes([0xab; KEY_LEN]);
        let key = DataKey::generate(&mut rng());
        assert_eq!(format!("{master:?}"), "MasterKey(..)");
        assert_eq!(format!("{key:?}"), "DataKey(..)");
    }
}
