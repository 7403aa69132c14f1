//! Personal data at rest: names and phone numbers of contact people and
//! couriers, encrypted with AES-256-GCM.
//!
//! **Master keys never enter the database.** They come from a key file (one
//! `KEY_ID BASE64` line per key; the last is used for new data, older ones
//! still open what they wrapped). Each subject gets its own random data key,
//! stored wrapped by a master key together with that key's id, so master
//! keys can rotate; deleting a subject's wrapped key makes its data
//! irrecoverable (crypto-shredding). Every value is sealed with a fresh
//! random 96-bit nonce and bound to its subject and field. Phones are found
//! by a keyed HMAC (blind index), never by plaintext.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hmac::Mac;
use rand::RngCore;
use uuid::Uuid;

use crate::db::{Db, Tx};
use crate::{on_db, on_db_write, on_tx};

const NONCE: usize = 12;

/// key id, wrapped data key, sealed name, sealed phone
type SealedRow = (String, Vec<u8>, Vec<u8>, Vec<u8>);

/// A person's name and phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Personal {
    pub name: String,
    pub phone: String,
}

pub struct Vault {
    /// (key id, key); the last one wraps new data keys.
    keys: Vec<(String, [u8; 32])>,
    index_key: [u8; 32],
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "Vault {{ keys: {ids:?} }}")
    }
}

fn seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> anyhow::Result<Vec<u8>> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE];
    rand::rng().fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .map_err(|_| anyhow::anyhow!("encryption failed"))?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(out)
}

fn open(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE {
        return None;
    }
    let (nonce, body) = sealed.split_at(NONCE);
    Aes256Gcm::new(key.into()).decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad }).ok()
}

fn aad(subject: Uuid, field: &str) -> Vec<u8> {
    let mut out = subject.as_bytes().to_vec();
    out.extend_from_slice(field.as_bytes());
    out
}

/// Digits only, so `138-0000-0001` and `+86 13800000001` find the same person.
fn normalise_phone(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    digits.strip_prefix("86").filter(|d| d.len() == 11).map_or(digits.clone(), str::to_owned)
}

impl Vault {
    /// Reads `KEY_ID BASE64` lines.
    pub fn parse(text: &str) -> anyhow::Result<Vault> {
        let mut keys = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (id, encoded) =
                line.split_once(char::is_whitespace).ok_or_else(|| anyhow::anyhow!("a key line is `ID BASE64`"))?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.trim())?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| anyhow::anyhow!("key {id} is not 32 bytes"))?;
            keys.push((id.to_owned(), key));
        }
        let first = keys.first().ok_or_else(|| anyhow::anyhow!("the key file holds no key"))?.1;
        // The blind index stays stable across rotations: it hangs off the first key.
        let mut mac = crate::hmac_sha256(&first);
        mac.update(b"xianlu phone index v1");
        let index_key: [u8; 32] = mac.finalize().into_bytes().into();
        Ok(Vault { keys, index_key })
    }

    /// Loads the key file, creating one with a fresh key (readable by the
    /// owner only) when it does not exist yet.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Vault> {
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            let line = format!("k1 {}\n", base64::engine::general_purpose::STANDARD.encode(key));
            match write_private(path, &line) {
                Ok(()) => tracing::warn!(
                    path = %path.display(),
                    "created a new master key file for personal data; back it up apart from the database"
                ),
                // Another process sharing this key file made it first.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        Vault::parse(&std::fs::read_to_string(path)?)
    }

    fn active(&self) -> &(String, [u8; 32]) {
        // `parse` refuses an empty file.
        &self.keys[self.keys.len() - 1]
    }

    fn key(&self, id: &str) -> Option<&[u8; 32]> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, key)| key)
    }

    pub fn phone_index(&self, phone: &str) -> String {
        let mut mac = crate::hmac_sha256(&self.index_key);
        mac.update(normalise_phone(phone).as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Encrypts a subject's personal data under a new data key, inside `tx`.
    pub async fn store(&self, tx: &mut Tx, subject: Uuid, personal: &Personal) -> anyhow::Result<()> {
        let mut data_key = [0u8; 32];
        rand::rng().fill_bytes(&mut data_key);
        let (key_id, master) = self.active();
        let wrapped = seal(master, &data_key, &aad(subject, "data-key"))?;
        let name = seal(&data_key, personal.name.as_bytes(), &aad(subject, "name"))?;
        let phone = seal(&data_key, personal.phone.as_bytes(), &aad(subject, "phone"))?;
        let index = self.phone_index(&personal.phone);
        on_tx!(tx, c => {
            sqlx::query("INSERT INTO subject_keys (subject_id, key_id, wrapped_key, created_at) VALUES ($1, $2, $3, $4)")
                .bind(subject)
                .bind(key_id)
                .bind(wrapped)
                .bind(crate::clock::wall_now())
                .execute(&mut *c)
                .await?;
            sqlx::query("INSERT INTO personal_data (subject_id, name_ct, phone_ct, phone_index) VALUES ($1, $2, $3, $4)")
                .bind(subject)
                .bind(name)
                .bind(phone)
                .bind(index)
                .execute(&mut *c)
                .await?;
        });
        Ok(())
    }

    /// The subject's personal data, or `None` when it was erased (or never held).
    pub async fn load(&self, db: &Db, subject: Uuid) -> anyhow::Result<Option<Personal>> {
        let row: Option<SealedRow> = on_db!(db, pool => {
            sqlx::query_as(
                "SELECT k.key_id, k.wrapped_key, p.name_ct, p.phone_ct FROM subject_keys k \
                 JOIN personal_data p ON p.subject_id = k.subject_id WHERE k.subject_id = $1",
            )
            .bind(subject)
            .fetch_optional(pool)
            .await?
        });
        let Some((key_id, wrapped, name, phone)) = row else { return Ok(None) };
        let master = self.key(&key_id).ok_or_else(|| anyhow::anyhow!("master key {key_id} is not in the key file"))?;
        let data_key: [u8; 32] = open(master, &wrapped, &aad(subject, "data-key"))
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| anyhow::anyhow!("the data key of {subject} does not open"))?;
        let text = |sealed: &[u8], field: &str| {
            open(&data_key, sealed, &aad(subject, field))
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| anyhow::anyhow!("the {field} of {subject} does not open"))
        };
        Ok(Some(Personal { name: text(&name, "name")?, phone: text(&phone, "phone")? }))
    }

    /// Subjects whose phone is `phone`, found through the blind index.
    pub async fn find_by_phone(&self, db: &Db, phone: &str) -> anyhow::Result<Vec<Uuid>> {
        let rows: Vec<(Uuid,)> = on_db!(db, pool => {
            sqlx::query_as("SELECT subject_id FROM personal_data WHERE phone_index = $1")
                .bind(self.phone_index(phone))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    /// Destroys a subject's data key and ciphertext: nothing can open it again.
    pub async fn shred(tx: &mut Tx, subject: Uuid) -> anyhow::Result<()> {
        on_tx!(tx, c => {
            sqlx::query("DELETE FROM subject_keys WHERE subject_id = $1").bind(subject).execute(&mut *c).await?;
            sqlx::query("DELETE FROM personal_data WHERE subject_id = $1").bind(subject).execute(&mut *c).await?;
        });
        Ok(())
    }

    /// Encrypts rows left in the plaintext table by an older version, then removes them.
    pub async fn encrypt_plaintext_rows(&self, db: &Db) -> anyhow::Result<usize> {
        let rows: Vec<(Uuid, String, String)> = on_db!(db, pool => {
            sqlx::query_as("SELECT subject_id, name, phone FROM personal_data_plain").fetch_all(pool).await?
        });
        for (subject, name, phone) in &rows {
            let mut tx = db.begin().await?;
            self.store(&mut tx, *subject, &Personal { name: name.clone(), phone: phone.clone() }).await?;
            on_tx!(&mut tx, c => {
                sqlx::query("DELETE FROM personal_data_plain WHERE subject_id = $1").bind(*subject).execute(&mut *c).await?;
            });
            tx.commit().await?;
        }
        if !rows.is_empty() {
            // Rewrite the file so no freed page keeps the plaintext.
            on_db_write!(db, pool => {
                sqlx::query("VACUUM").execute(pool).await?;
            });
        }
        Ok(rows.len())
    }
}

/// Masks a phone number to its first three and last four digits
/// (`13812345678` → `138****5678`).
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 7 {
        return "****".into();
    }
    let head: String = digits[..3].iter().collect();
    let tail: String = digits[digits.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
        file.write_all(text.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, text)
    }
}

/// Where the key file is when the configuration does not say.
pub fn default_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("personal-data.keys")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> Vault {
        Vault::parse(&format!(
            "k1 {}\nk2 {}\n",
            base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
            base64::engine::general_purpose::STANDARD.encode([2u8; 32])
        ))
        .expect("a valid key file")
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_their_subject_and_field() {
        let key = [7u8; 32];
        let subject = Uuid::from_u128(1);
        let sealed = seal(&key, b"13800000001", &aad(subject, "phone")).expect("seals");
        assert!(!sealed.windows(11).any(|w| w == b"13800000001"));
        assert_eq!(open(&key, &sealed, &aad(subject, "phone")).as_deref(), Some(&b"13800000001"[..]));
        assert!(open(&[8u8; 32], &sealed, &aad(subject, "phone")).is_none());
        assert!(open(&key, &sealed, &aad(Uuid::from_u128(2), "phone")).is_none(), "bound to its subject");
        assert!(open(&key, &sealed, &aad(subject, "name")).is_none(), "bound to its field");
        assert_ne!(sealed, seal(&key, b"13800000001", &aad(subject, "phone")).expect("seals"), "fresh nonces");
    }

    #[test]
    fn the_blind_index_finds_a_phone_however_it_is_written_and_survives_rotation() {
        let v = vault();
        assert_eq!(v.phone_index("13800000001"), v.phone_index("+86 138-0000-0001"));
        assert_ne!(v.phone_index("13800000001"), v.phone_index("13800000002"));
        assert_eq!(v.active().0, "k2", "the last key wraps new data");
        let rotated = Vault::parse(&format!(
            "k1 {}\nk2 {}\nk3 {}\n",
            base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
            base64::engine::general_purpose::STANDARD.encode([2u8; 32]),
            base64::engine::general_purpose::STANDARD.encode([3u8; 32])
        ))
        .expect("a valid key file");
        assert_eq!(rotated.phone_index("13800000001"), v.phone_index("13800000001"));
    }

    #[test]
    fn phones_are_masked_to_the_first_three_and_last_four_digits() {
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_phone("123"), "****");
    }
}
